#include "core/machine/owner.hpp"

namespace mk::core {
namespace {

uid_t owner_uid = 0;

bool absolute(const char* p) { return p && p[0] == '/'; }

std::string without_trailing_slashes(std::string p) {
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
}

}  // namespace

UserManagerPlan plan_user_manager(const char* runtime_dir, const char* data_home, const char* home) {
    UserManagerPlan plan;
    if (!absolute(runtime_dir)) {
        plan.error = "--user needs $XDG_RUNTIME_DIR, your runtime directory (an absolute path such as /run/user/UID)";
        return plan;
    }
    std::string data;
    if (absolute(data_home)) data = without_trailing_slashes(data_home);
    else if (absolute(home)) data = without_trailing_slashes(home) + "/.local/share";
    else {
        plan.error = "--user needs $HOME (or $XDG_DATA_HOME) as an absolute path for your image pool";
        return plan;
    }
    std::string runtime = without_trailing_slashes(runtime_dir);
    if (runtime == "/") runtime.clear();
    if (data == "/") data.clear();
    plan.log_dir = runtime + "/machkit";
    plan.state_dir = plan.log_dir + "/machines";
    plan.varlink_dir = runtime + "/systemd/machine";
    plan.pool = data + "/machines";
    return plan;
}

void set_manager_owner(uid_t owner) noexcept { owner_uid = owner; }

uid_t manager_owner() noexcept { return owner_uid; }

bool caller_is_privileged(uid_t caller) noexcept { return caller == 0 || caller == owner_uid; }

}  // namespace mk::core
