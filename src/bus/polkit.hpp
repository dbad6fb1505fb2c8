// polkit for the machine1 and import1 methods that machined and importd 252 hand to polkit: the
// same action IDs, the same details, the same "root never asks" rule (docs/machd.md, Polkit).
//
// Two parts:
// - polkit_request_for(): pure. Which action (and which details) a method call needs, from its
//   interface, member, object path and leading string arguments; nullopt for methods polkit
//   does not gate (read-only ones, and the root-only ones: Create/Register, io.machkit.Manager1).
// - PolkitGate: an sd-bus filter on machd's connection. It sees every call before sdbus-c++
//   dispatches it. A gated call from a non-root sender is held back (no reply) while
//   CheckAuthorization runs asynchronously on the same connection; when polkit answers, a
//   denied call gets its error reply and an authorized one is queued again (sd_bus_enqueue_for_read,
//   as systemd's bus_verify_polkit_async) and then reaches its handler, which sees the grant
//   through caller_of() (Caller::granted) and require_action().
//
// Security (docs/security.md T-37, T-38):
// - The subject is the sender's unique bus name taken from the message when it arrives
//   (polkit's "system-bus-name"): polkitd asks the bus daemon for that connection's uid and pid,
//   so a caller that has gone is an error, never uid 0.
// - Anything but polkit's explicit "authorized" is a deny: polkitd absent, an error reply, a
//   reply that does not parse, credentials machd cannot read.
// - The held message is referenced until it is answered or dropped; when its sender disconnects
//   while polkit is still deciding (or before the re-queued call is dispatched), the query is
//   cancelled and the call is dropped: nothing runs for a caller that has gone.
// - At most kMaxPending calls wait for polkit at once; more get LimitsExceeded. 128 is the system
//   bus's default max_replies_per_connection (beyond it dbus-daemon refuses the CheckAuthorization
//   calls anyway) and keeps the per-call sender match rules well under its 512 per connection.
//
// Ownership: the gate does not own the bus; destroy it before the connection. Thread-hostile:
// it runs on machd's one loop (the grant slot is per thread).
#pragma once

#include <systemd/sd-bus.h>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/machine/service.hpp"

namespace mk::bus {

inline constexpr const char* kPolkitShell = "org.freedesktop.machine1.shell";
inline constexpr const char* kPolkitHostShell = "org.freedesktop.machine1.host-shell";
inline constexpr const char* kPolkitLogin = "org.freedesktop.machine1.login";
inline constexpr const char* kPolkitHostLogin = "org.freedesktop.machine1.host-login";
inline constexpr const char* kPolkitOpenPty = "org.freedesktop.machine1.open-pty";
inline constexpr const char* kPolkitHostOpenPty = "org.freedesktop.machine1.host-open-pty";
inline constexpr const char* kPolkitManageMachines = "org.freedesktop.machine1.manage-machines";
inline constexpr const char* kPolkitManageImages = "org.freedesktop.machine1.manage-images";
inline constexpr const char* kPolkitImport = "org.freedesktop.import1.import";
inline constexpr const char* kPolkitExport = "org.freedesktop.import1.export";
inline constexpr const char* kPolkitPull = "org.freedesktop.import1.pull";

// What a call asks polkit: the action and its details (a{ss}, as machined sends them).
struct PolkitRequest {
    std::string action;
    std::vector<std::pair<std::string, std::string>> details;
};

// A method call as the gate sees it. `object` is the decoded last path element for Machine and
// Image objects (the machine or image name; "self" already resolved by the caller), empty for
// the managers. `args` are the call's leading string arguments (fewer if a non-string comes
// first); `flag` the first boolean argument (MarkImageReadOnly's read_only).
struct PolkitCall {
    std::string interface;
    std::string member;
    std::string object;
    std::vector<std::string> args;
    bool flag = false;
};

// Pure. The action for `call`, or nullopt when polkit does not gate the method.
std::optional<PolkitRequest> polkit_request_for(const PolkitCall& call);

// The action polkit authorized for `message`, when `message` is the call being dispatched after
// a grant; empty otherwise.
std::string polkit_granted_action(sd_bus_message* message);

class PolkitGate {
public:
    // Answers whether a machine of that name exists, and resolves "self" (the sender's machine,
    // by the pid the bus daemon vouches for) to a name; empty when there is none. Calls for
    // machines that do not exist pass ungated, so their handler answers NoSuchMachine (machined
    // looks the machine up before asking polkit).
    using MachineLookup = std::function<std::string(sd_bus_message* call, const std::string& label)>;

    static constexpr size_t kMaxPending = 128;

    PolkitGate(sd_bus* bus, MachineLookup lookup);
    ~PolkitGate();
    PolkitGate(const PolkitGate&) = delete;
    PolkitGate& operator=(const PolkitGate&) = delete;

    size_t pending() const { return queries_.size(); }

private:
    struct Query;
    static int on_message(sd_bus_message* m, void* userdata, sd_bus_error* error);
    static int on_reply(sd_bus_message* reply, void* userdata, sd_bus_error* error);
    static int on_sender_gone(sd_bus_track* track, void* userdata);

    int filter(sd_bus_message* m);
    int start_query(sd_bus_message* m, const PolkitRequest& request);
    void finish(Query& q, sd_bus_message* reply);
    void deny(sd_bus_message* m, const char* name, const std::string& text);

    sd_bus* bus_;
    MachineLookup lookup_;
    sd_bus_slot* filter_slot_ = nullptr;
    // By held message: waiting for polkit, or answered and queued again for dispatch.
    std::map<sd_bus_message*, std::unique_ptr<Query>> queries_;
};

// The gate's MachineLookup over machd's machines: by name, or "self" by the sender's pid.
PolkitGate::MachineLookup polkit_machine_lookup(core::MachineService& service);

}  // namespace mk::bus
