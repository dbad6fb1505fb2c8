// What the Manager's *Machine(name, …) methods and the Machine objects' methods share: each checks
// the caller, runs the core operation and turns its errors into D-Bus errors (sdbus::Error).
// Thread-hostile (machd's one loop).
#pragma once

#include <exception>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>

#include "bus/credentials.hpp"
#include "bus/event_loop.hpp"
#include "bus/guest_bus.hpp"
#include "bus/names.hpp"
#include "core/machine/copy.hpp"
#include "core/machine/service.hpp"

namespace mk::bus {

std::string machine_object_path(std::string_view name);

// Copies run in helper children; `done` is called when the child exits, with nullptr or the
// error (bounded: 64 at once, as machined). Without a loop (set_loop not called) a copy completes
// synchronously.
class CopyOperations {
public:
    using Done = std::function<void(const sdbus::Error*)>;
    void set_loop(EventLoop* loop) { loop_ = loop; }
    void start(const Caller& caller, core::Machine& m, const std::string& source, const std::string& destination,
               bool to_machine, uint64_t flags, Done done);
    // The same for a front end that checked its caller itself (Varlink): `finished` gets nullptr or
    // the error as thrown (std::system_error, or sdbus::Error for the bound).
    using Finished = std::function<void(std::exception_ptr)>;
    void start_checked(core::Machine& m, const std::string& source, const std::string& destination, bool to_machine,
                       uint64_t flags, Finished finished);

private:
    static constexpr size_t kMax = 64;
    EventLoop* loop_ = nullptr;
    std::map<int, std::pair<core::CopyOperation, Finished>> running_;  // by helper pidfd
};

struct MachineOps {
    static void terminate(const Caller& caller, core::MachineService& svc, core::Machine& m);
    static void kill(const Caller& caller, core::MachineService& svc, core::Machine& m, const std::string& who, int32_t sig);
    static std::vector<sdbus::Struct<int32_t, std::vector<uint8_t>>> addresses(core::Machine& m);
    static std::map<std::string, std::string> os_release(core::Machine& m);
    static uint32_t uid_shift(core::Machine& m);
    static std::tuple<sdbus::UnixFd, std::string> open_pty(const Caller& caller, core::Machine& m);
    // A pty in the machine plus container-getty@N.service started on it by the guest's systemd
    // (machined's OpenLogin). `done` gets the master and its path, or the error (the master then
    // closed, no getty started); it may run later, from the loop (up to kGuestCallTimeout).
    using LoginDone = std::function<void(const sdbus::Error* error, sdbus::UnixFd master, const std::string& path)>;
    static void open_login(const Caller& caller, core::Machine& m, GuestUnitStarts& starts, LoginDone done);
    static sdbus::UnixFd open_root(const Caller& caller, core::Machine& m);
    static void bind_mount(const Caller& caller, core::Machine& m, const std::string& source, const std::string& destination,
                           bool read_only, bool mkdir);
    static std::tuple<sdbus::UnixFd, std::string> open_shell(const Caller& caller, core::MachineService& svc,
                                                             core::Machine& m, const std::string& user,
                                                             const std::string& path, const std::vector<std::string>& args,
                                                             const std::vector<std::string>& environment);
};

}  // namespace mk::bus
