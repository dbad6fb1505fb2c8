// The systemd scope backend: when systemd manages the cgroup tree, machine scopes are transient
// units started with org.freedesktop.systemd1.Manager.StartTransientUnit (machined 252's property
// set, then the caller's CreateMachine properties verbatim), and the CreateMachine reply waits for
// the job's JobRemoved signal. Reading and signalling processes go straight to cgroupfs (harmless,
// and what KillUnit would do). Lives in libmkbus because it speaks D-Bus. Thread-hostile; shares
// machd's connection and loop. Does not own the connection.
#pragma once

#include <sdbus-c++/sdbus-c++.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/kernel/cgroup.hpp"

namespace mk::bus {

class SystemdScopeBackend final : public core::ScopeBackend {
public:
    using JobDone = std::function<void(const std::string& unit, const std::string& job, const std::string& result)>;

    // Subscribes to systemd's JobRemoved; `on_job_done` is called from the loop for every job.
    SystemdScopeBackend(sdbus::IConnection& connection, std::string cgroup_root, JobDone on_job_done);

    core::ScopeStart start_scope(const std::string& unit, pid_t leader, const core::ScopeProperties& props) override;
    size_t kill(const std::string& cgroup_path, int sig) override { return reader_.kill(cgroup_path, sig); }
    // StopUnit + UnrefUnit (machined took a reference with AddRef=yes); a unit already gone is fine.
    void remove_scope(const std::string& cgroup_path) override;
    bool exists(const std::string& cgroup_path) override { return reader_.exists(cgroup_path); }
    std::vector<pid_t> pids(const std::string& cgroup_path) override { return reader_.pids(cgroup_path); }
    std::vector<std::string> dirs(const std::string& cgroup_path, const std::string& unit_path) override {
        return reader_.dirs(cgroup_path, unit_path);
    }

    // StartUnit(unit, "replace"): systemd queues the job and answers at once with its path.
    std::string start_unit(const std::string& unit);

    // StartTransientUnit(unit, "fail") of a service running argv[0] with `argv`, on the given
    // descriptors (-1: systemd's default), with `properties` (its sandbox) after machkit's own;
    // collected as soon as it ends. StopUnit(unit, "replace") ends it; a unit already gone is fine.
    void start_service(const std::string& unit, const std::vector<std::string>& argv, int stdin_fd, int stdout_fd,
                       int stderr_fd, const std::vector<sdbus::Struct<std::string, sdbus::Variant>>& properties);
    void stop_unit(const std::string& unit);

    // Whether org.freedesktop.systemd1 has an owner on `connection`'s bus.
    static bool systemd_on_bus(sdbus::IConnection& connection);

private:
    // StartTransientUnit(unit, "fail", properties, no aux units) → the job's path.
    std::string start_transient(const std::string& unit,
                                const std::vector<sdbus::Struct<std::string, sdbus::Variant>>& properties);

    std::unique_ptr<sdbus::IProxy> proxy_;
    core::CgroupfsBackend reader_;
    JobDone on_job_done_;
};

}  // namespace mk::bus
