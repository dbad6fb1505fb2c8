// A stand-in for PID 1's org.freedesktop.systemd1 on the private test bus, just enough for machd's
// systemd scope backend: StartTransientUnit (creates the scope with the cgroupfs code, replies, then
// emits JobRemoved like systemd), StopUnit, UnrefUnit, Subscribe; for machctl enable/disable
// EnableUnitFiles, DisableUnitFiles (answering the changes systemd would make, without making
// them) and Reload. Logs every call to --log so the tests can check what machd and machctl sent.
//   fake-systemd1 --cgroup-root=/sys/fs/cgroup --log=FILE [--fail=UNIT]
#include <sdbus-c++/sdbus-c++.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include "core/kernel/cgroup.hpp"

namespace {

constexpr const char* kManager = "org.freedesktop.systemd1.Manager";
using Props = std::vector<sdbus::Struct<std::string, sdbus::Variant>>;
using Aux = std::vector<sdbus::Struct<std::string, Props>>;

std::string show(const sdbus::Variant& v) {
    auto t = v.peekValueType();
    if (t == "s") return v.get<std::string>();
    if (t == "b") return v.get<bool>() ? "true" : "false";
    if (t == "t") return std::to_string(v.get<uint64_t>());
    if (t == "i") return std::to_string(v.get<int32_t>());
    if (t == "au") {
        std::string s;
        for (auto p : v.get<std::vector<uint32_t>>()) s += (s.empty() ? "" : ",") + std::to_string(p);
        return s;
    }
    return "<" + t + ">";
}

}  // namespace

int main(int argc, char** argv) {
    std::string root = "/sys/fs/cgroup", log_path = "/dev/null", fail;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a.starts_with("--cgroup-root=")) root = a.substr(14);
        else if (a.starts_with("--log=")) log_path = a.substr(6);
        else if (a.starts_with("--fail=")) fail = a.substr(7);
    }
    std::ofstream log(log_path, std::ios::app);
    mk::core::CgroupfsBackend cgroups(root);
    std::map<std::string, std::string> scopes;  // unit -> cgroup path
    uint32_t next_job = 1;

    auto conn = sdbus::createSystemBusConnection("org.freedesktop.systemd1");
    auto obj = sdbus::createObject(*conn, "/org/freedesktop/systemd1");
    auto job_removed = [&](uint32_t id, const std::string& unit, const std::string& result) {
        obj->emitSignal("JobRemoved")
            .onInterface(kManager)
            .withArguments(id, sdbus::ObjectPath("/org/freedesktop/systemd1/job/" + std::to_string(id)), unit, result);
    };
    obj->registerMethod("StartTransientUnit")
        .onInterface(kManager)
        .implementedAs([&](sdbus::Result<sdbus::ObjectPath>&& reply, std::string name, std::string mode, Props props, Aux) {
            log << "StartTransientUnit " << name << " " << mode << "\n";
            std::string slice = "machine.slice";
            pid_t pid = 0;
            for (const auto& p : props) {
                log << "  " << p.get<0>() << "=" << show(p.get<1>()) << "\n";
                if (p.get<0>() == "Slice") slice = p.get<1>().get<std::string>();
                if (p.get<0>() == "PIDs") pid = static_cast<pid_t>(p.get<1>().get<std::vector<uint32_t>>().at(0));
            }
            log.flush();
            uint32_t id = next_job++;
            std::string result = "done";
            if (name == fail) {
                result = "failed";
            } else {
                try {
                    mk::core::ScopeProperties sp;
                    sp.slice = slice;
                    scopes[name] = cgroups.start_scope(name, pid, sp).cgroup_path;
                } catch (const std::exception& e) {
                    log << "  start failed: " << e.what() << "\n";
                    result = "failed";
                }
            }
            // As PID 1: the reply (job path) first, JobRemoved when the job is done.
            reply.returnResults(sdbus::ObjectPath("/org/freedesktop/systemd1/job/" + std::to_string(id)));
            job_removed(id, name, result);
        });
    obj->registerMethod("StopUnit")
        .onInterface(kManager)
        .implementedAs([&](const std::string& name, const std::string& mode) {
            log << "StopUnit " << name << " " << mode << "\n";
            log.flush();
            auto it = scopes.find(name);
            if (it == scopes.end())
                throw sdbus::Error("org.freedesktop.systemd1.NoSuchUnit", "Unit " + name + " not loaded.");
            cgroups.remove_scope(it->second);
            scopes.erase(it);
            uint32_t id = next_job++;
            return sdbus::ObjectPath("/org/freedesktop/systemd1/job/" + std::to_string(id));
        });
    obj->registerMethod("UnrefUnit").onInterface(kManager).implementedAs([&](const std::string& name) {
        log << "UnrefUnit " << name << "\n";
        log.flush();
    });
    obj->registerMethod("Subscribe").onInterface(kManager).implementedAs([&]() {
        log << "Subscribe\n";
        log.flush();
    });
    using Changes = std::vector<sdbus::Struct<std::string, std::string, std::string>>;
    auto list = [](const std::vector<std::string>& units) {
        std::string s;
        for (const auto& u : units) s += " " + u;
        return s;
    };
    obj->registerMethod("EnableUnitFiles")
        .onInterface(kManager)
        .implementedAs([&](const std::vector<std::string>& units, bool runtime, bool force) {
            log << "EnableUnitFiles" << list(units) << " runtime=" << runtime << " force=" << force << "\n";
            log.flush();
            Changes changes;
            for (const auto& u : units) {
                std::string wanted_by = u == "machines.target" ? "multi-user.target" : "machines.target";
                std::string templ = u.find('@') != std::string::npos ? u.substr(0, u.find('@') + 1) + ".service" : u;
                changes.emplace_back("symlink", "/etc/systemd/system/" + wanted_by + ".wants/" + u,
                                     "/lib/systemd/system/" + templ);
            }
            return std::tuple<bool, Changes>(true, changes);
        });
    obj->registerMethod("DisableUnitFiles")
        .onInterface(kManager)
        .implementedAs([&](const std::vector<std::string>& units, bool runtime) {
            log << "DisableUnitFiles" << list(units) << " runtime=" << runtime << "\n";
            log.flush();
            Changes changes;
            for (const auto& u : units) changes.emplace_back("unlink", "/etc/systemd/system/machines.target.wants/" + u, "");
            return changes;
        });
    obj->registerMethod("Reload").onInterface(kManager).implementedAs([&]() {
        log << "Reload\n";
        log.flush();
    });
    obj->registerSignal("JobRemoved")
        .onInterface(kManager)
        .withParameters<uint32_t, sdbus::ObjectPath, std::string, std::string>();
    obj->finishRegistration();
    std::fprintf(stdout, "ready\n");
    std::fflush(stdout);
    conn->enterEventLoop();
}
