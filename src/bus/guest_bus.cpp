#include "bus/guest_bus.hpp"

#include <systemd/sd-bus.h>
#include <time.h>

#include <memory>
#include <system_error>

#include <sdbus-c++/Error.h>

#include "bus/errors.hpp"
#include "core/base/error.hpp"
#include "core/machine/shell.hpp"

namespace mk::bus {
namespace {

// Close without flushing: sd_bus_flush would first wait for a half-authenticated connection to
// come up (sd-bus's own 90 s auth timeout), and there is nothing to flush once the reply is in.
struct BusCloser {
    void operator()(sd_bus* b) const noexcept { sd_bus_close_unref(b); }
};
using BusPtr = std::unique_ptr<sd_bus, BusCloser>;

struct ErrorGuard {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    ~ErrorGuard() { sd_bus_error_free(&e); }
};

struct MessageGuard {
    sd_bus_message* m = nullptr;
    ~MessageGuard() { sd_bus_message_unref(m); }
};

uint64_t now_usec() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

void check(int r, const std::string& what) {
    if (r < 0) core::throw_errno(-r, what);
}

}  // namespace

std::string container_getty_unit(const std::string& pty_path) {
    static constexpr std::string_view kPrefix = "/dev/pts/";
    std::string_view n = std::string_view(pty_path).substr(pty_path.starts_with(kPrefix) ? kPrefix.size() : 0);
    if (!pty_path.starts_with(kPrefix) || n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != n.npos)
        throw sdbus::Error(kInvalidArgs, "Not a pty of a devpts: '" + pty_path + "'");
    return "container-getty@" + std::string(n) + ".service";
}

void start_unit_in_machine(const core::Machine& m, const std::string& unit, std::chrono::microseconds timeout) {
    const uint64_t deadline = now_usec() + static_cast<uint64_t>(timeout.count());
    core::UniqueFd fd = core::connect_machine_bus(m);

    sd_bus* raw = nullptr;
    check(sd_bus_new(&raw), "sd_bus_new");
    BusPtr bus(raw);
    const std::string where = "the system bus of machine " + m.name;
    check(sd_bus_set_fd(bus.get(), fd.get(), fd.get()), "Failed to use " + where);
    fd.release();  // the bus closes it now
    // A bus client (Hello, a unique name) that does not trust the peer: the guest is not us.
    check(sd_bus_set_bus_client(bus.get(), 1), "sd_bus_set_bus_client");
    check(sd_bus_set_trusted(bus.get(), 0), "sd_bus_set_trusted");
    check(sd_bus_start(bus.get()), "Failed to connect to " + where);

    // sd_bus_call would wait for authentication and Hello without our bound: drive them here.
    for (;;) {
        int r = sd_bus_is_ready(bus.get());
        check(r, "Failed to connect to " + where);
        if (r > 0) break;
        r = sd_bus_process(bus.get(), nullptr);
        check(r, "Failed to connect to " + where);
        if (r > 0) continue;
        uint64_t now = now_usec();
        if (now >= deadline) core::throw_errno(ETIMEDOUT, "Timed out connecting to " + where);
        check(sd_bus_wait(bus.get(), deadline - now), "Failed to connect to " + where);
    }
    uint64_t now = now_usec();
    if (now >= deadline) core::throw_errno(ETIMEDOUT, "Timed out connecting to " + where);
    check(sd_bus_set_method_call_timeout(bus.get(), deadline - now), "sd_bus_set_method_call_timeout");

    ErrorGuard error;
    MessageGuard reply;
    int r = sd_bus_call_method(bus.get(), "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                               "org.freedesktop.systemd1.Manager", "StartUnit", &error.e, &reply.m, "ss",
                               unit.c_str(), "replace");
    if (r >= 0) return;
    if (!sd_bus_error_is_set(&error.e)) core::throw_errno(-r, "Failed to start " + unit + " in machine " + m.name);
    std::string name = error.e.name;
    std::string msg = "Failed to start " + unit + " in machine " + m.name + ": " + (error.e.message ? error.e.message : name);
    if (name == "org.freedesktop.DBus.Error.ServiceUnknown" || name == "org.freedesktop.DBus.Error.NameHasNoOwner")
        msg = "Machine " + m.name + " has no service manager on its system bus (is it booted with systemd?): " +
              (error.e.message ? error.e.message : name);
    // The guest's error name, as machined passes it on (sd-bus validated it on receipt).
    throw sdbus::Error(name, msg);
}

}  // namespace mk::bus
