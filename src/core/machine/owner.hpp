// Whose machine manager this is. The system's machd (owner root) takes privileged calls from root
// only; `machd --user` (owner: the user running it, docs/rootless.md) from that user as well. Set
// once at startup, before any call is served; read by the bus and Varlink credential checks.
#pragma once

#include <sys/types.h>

#include <string>

namespace mk::core {

// 0 for the system's manager (the default), the user's UID for a per-user one.
void set_manager_owner(uid_t owner) noexcept;
[[nodiscard]] uid_t manager_owner() noexcept;

// Root, or the owner of a per-user manager: who may register, terminate and enter machines.
[[nodiscard]] bool caller_is_privileged(uid_t caller) noexcept;

// Where `machd --user` keeps things, from the user's environment (pure; the values of
// $XDG_RUNTIME_DIR, $XDG_DATA_HOME and $HOME, nullptr when unset):
//   state_dir   RUNTIME/machkit/machines   (the system's: /run/systemd/machines)
//   log_dir     RUNTIME/machkit           (StartMachine's spawn logs)
//   varlink_dir RUNTIME/systemd/machine   (where systemd >= 259's per-user machined listens)
//   pool        DATA/machines, DATA = $XDG_DATA_HOME or ~/.local/share (systemd's per-user images)
// error: one line saying what to set, when a needed variable is missing or not an absolute path.
struct UserManagerPlan {
    std::string state_dir, log_dir, varlink_dir, pool;
    std::string error;
};
[[nodiscard]] UserManagerPlan plan_user_manager(const char* runtime_dir, const char* data_home, const char* home);

}  // namespace mk::core
