#include "bus/guest_bus.hpp"

#include <systemd/sd-bus.h>
#include <sys/timerfd.h>
#include <time.h>

#include <cstdio>
#include <cstring>

#include <memory>
#include <system_error>

#include <sdbus-c++/Error.h>

#include "bus/errors.hpp"
#include "bus/event_loop.hpp"
#include "bus/names.hpp"
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
        throw bus_error(kInvalidArgs, "Not a pty of a devpts: '" + pty_path + "'");
    return "container-getty@" + std::string(n) + ".service";
}

namespace {

// A bus client on the guest's system bus socket (connect started; authentication and Hello run as
// the connection is processed).
BusPtr open_guest_bus(const core::Machine& m) {
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
    return bus;
}

// The guest's error for StartUnit, named as the guest named it (machined passes it on; sd-bus
// validated the name on receipt), with a message naming the machine.
sdbus::Error guest_error(const sd_bus_error& error, const std::string& unit, const std::string& machine) {
    std::string name = error.name;
    std::string text = error.message ? error.message : name;
    if (name == kServiceUnknown || name == kNameHasNoOwner)
        return bus_error(
            name, "Machine " + machine + " has no service manager on its system bus (is it booted with systemd?): " + text);
    return bus_error(name, "Failed to start " + unit + " in machine " + machine + ": " + text);
}

}  // namespace

void start_unit_in_machine(const core::Machine& m, const std::string& unit, std::chrono::microseconds timeout) {
    const uint64_t deadline = now_usec() + static_cast<uint64_t>(timeout.count());
    BusPtr bus = open_guest_bus(m);
    const std::string where = "the system bus of machine " + m.name;

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
    int r = sd_bus_call_method(bus.get(), kSystemdBusName, kSystemdPath, kSystemdManagerInterface, "StartUnit", &error.e,
                               &reply.m, "ss", unit.c_str(), "replace");
    if (r >= 0) return;
    if (!sd_bus_error_is_set(&error.e)) core::throw_errno(-r, "Failed to start " + unit + " in machine " + m.name);
    throw guest_error(error.e, unit, m.name);
}

// ------------------------------------------------------------------------------ asynchronous

struct GuestUnitStarts::Call {
    GuestUnitStarts* owner;
    BusPtr bus;
    sd_bus_slot* slot = nullptr;
    core::UniqueFd timer;
    int bus_fd = -1;
    Done done;
    std::string unit, machine;
    bool finished = false;
    bool processing = false;  // inside sd_bus_process: the bus must outlive the callback
    ~Call() { sd_bus_slot_unref(slot); }
};

GuestUnitStarts::GuestUnitStarts() = default;

GuestUnitStarts::~GuestUnitStarts() {
    // machd is going away: nothing will answer these calls (their callers get no reply).
    while (!calls_.empty()) {
        Call* c = calls_.begin()->first;
        if (loop_) {
            loop_->unwatch_fd(c->bus_fd);
            loop_->unwatch_fd(c->timer.get());
        }
        calls_.erase(calls_.begin());
    }
}

void GuestUnitStarts::start(const core::Machine& m, const std::string& unit, Done done, std::chrono::microseconds timeout) {
    if (!loop_) {
        try {
            start_unit_in_machine(m, unit, timeout);
        } catch (...) {
            auto e = current_exception_to_bus_error();
            return done(&e);
        }
        return done(nullptr);
    }
    auto call = std::make_unique<Call>();
    Call* c = call.get();
    c->owner = this;
    c->done = std::move(done);
    c->unit = unit;
    c->machine = m.name;
    try {
        c->bus = open_guest_bus(m);
        c->bus_fd = sd_bus_get_fd(c->bus.get());
        check(c->bus_fd, "sd_bus_get_fd");
        // Queued now, sent once the connection is up.
        check(sd_bus_call_method_async(c->bus.get(), &c->slot, kSystemdBusName, kSystemdPath, kSystemdManagerInterface,
                                       "StartUnit", on_reply, c, "ss", unit.c_str(), "replace"),
              "Failed to queue StartUnit for machine " + m.name);
        c->timer.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
        if (!c->timer) core::throw_last_error("timerfd_create");
        itimerspec its{};
        its.it_value.tv_sec = static_cast<time_t>(timeout.count() / 1000000);
        its.it_value.tv_nsec = static_cast<long>(timeout.count() % 1000000) * 1000;
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
        if (::timerfd_settime(c->timer.get(), 0, &its, nullptr) < 0) core::throw_last_error("timerfd_settime");
        calls_.emplace(c, std::move(call));
    } catch (...) {
        auto e = current_exception_to_bus_error();
        c->done(&e);
        return;
    }
    loop_->watch_fd(c->bus_fd, [this, c] { pump(c); });
    loop_->watch_fd(c->timer.get(), [this, c] {
        sdbus::Error e(errno_to_bus_name(ETIMEDOUT),
                       "Timed out waiting for the system bus of machine " + c->machine + " to start " + c->unit);
        finish(c, &e);
    });
    pump(c);  // whatever sd-bus can do right away
}

void GuestUnitStarts::pump(Call* c) {
    c->processing = true;
    int r = 0;
    while (!c->finished && (r = sd_bus_process(c->bus.get(), nullptr)) > 0) {
    }
    c->processing = false;
    if (!c->finished && r < 0) {
        sdbus::Error e(errno_to_bus_name(-r), "Lost the system bus of machine " + c->machine + " before it started " +
                                                  c->unit + ": " + std::strerror(-r));
        finish(c, &e);
    }
    if (c->finished) calls_.erase(c);
}

void GuestUnitStarts::finish(Call* c, const sdbus::Error* error) {
    if (c->finished) return;
    c->finished = true;
    loop_->unwatch_fd(c->bus_fd);
    loop_->unwatch_fd(c->timer.get());
    auto done = std::move(c->done);
    try {
        done(error);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "machd: guest call completion: %s\n", e.what());
    }
    if (!c->processing) calls_.erase(c);
}

int GuestUnitStarts::on_reply(sd_bus_message* reply, void* userdata, sd_bus_error*) {
    auto* c = static_cast<Call*>(userdata);
    if (const sd_bus_error* e = sd_bus_message_get_error(reply)) {
        sdbus::Error err = guest_error(*e, c->unit, c->machine);
        c->owner->finish(c, &err);
    } else {
        c->owner->finish(c, nullptr);
    }
    return 1;
}

}  // namespace mk::bus
