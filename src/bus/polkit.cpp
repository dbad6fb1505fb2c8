#include "bus/polkit.hpp"

#include <cstdlib>
#include <cstring>

#include <sdbus-c++/Error.h>

#include "bus/credentials.hpp"
#include "bus/errors.hpp"
#include "bus/machine_ops.hpp"
#include "bus/names.hpp"
#include "core/machine/owner.hpp"

namespace mk::bus {

namespace {

constexpr const char* kInteractiveRequired = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";

using Details = std::vector<std::pair<std::string, std::string>>;

// Methods whose Manager form names the target first and whose object form is the same method
// on the object (machined-dbus.c redirects one to the other).
struct Target {
    const char* manager_member;  // on the Manager (the name is args[0])
    const char* object_member;   // on the Machine or Image object
};

// The machine (.host is the only host-class machine) and the rest of the call after its name.
struct Named {
    std::string name;
    std::vector<std::string> rest;
};

std::optional<Named> named(const PolkitCall& call, const char* object_iface, const Target& t) {
    if (call.interface == kManagerInterface && call.member == t.manager_member) {
        Named n;
        if (!call.args.empty()) n.name = call.args[0];
        n.rest.assign(call.args.begin() + (call.args.empty() ? 0 : 1), call.args.end());
        return n;
    }
    if (call.interface == object_iface && call.member == t.object_member) return Named{call.object, call.args};
    return std::nullopt;
}

std::string arg(const std::vector<std::string>& v, size_t i) { return i < v.size() ? v[i] : std::string(); }

std::optional<PolkitRequest> machine_request(const PolkitCall& call) {
    auto manage = [](const Named& n, const char* verb, Details extra = {}) {
        PolkitRequest r{kPolkitManageMachines, {{"machine", n.name}, {"verb", verb}}};
        r.details.insert(r.details.end(), extra.begin(), extra.end());
        return r;
    };
    const bool host = [&] {
        auto n = named(call, kMachineInterface, {call.member.c_str(), call.member.c_str()});
        return n && n->name == ".host";
    }();
    if (auto n = named(call, kMachineInterface, {"UnregisterMachine", "Unregister"})) return manage(*n, "unregister");
    if (auto n = named(call, kMachineInterface, {"TerminateMachine", "Terminate"})) return manage(*n, "terminate");
    if (auto n = named(call, kMachineInterface, {"KillMachine", "Kill"})) return manage(*n, "kill");
    if (auto n = named(call, kMachineInterface, {"OpenMachinePTY", "OpenPTY"}))
        return PolkitRequest{host ? kPolkitHostOpenPty : kPolkitOpenPty, {{"machine", n->name}}};
    if (auto n = named(call, kMachineInterface, {"OpenMachineLogin", "OpenLogin"}))
        return PolkitRequest{host ? kPolkitHostLogin : kPolkitLogin, {{"machine", n->name}, {"verb", "login"}}};
    if (auto n = named(call, kMachineInterface, {"OpenMachineShell", "OpenShell"})) {
        // The defaults machined applies before asking: root, /bin/sh.
        std::string user = arg(n->rest, 0).empty() ? "root" : arg(n->rest, 0);
        std::string program = arg(n->rest, 1).empty() ? "/bin/sh" : arg(n->rest, 1);
        return PolkitRequest{host ? kPolkitHostShell : kPolkitShell,
                             {{"machine", n->name}, {"user", user}, {"program", program}, {"verb", "shell"}}};
    }
    if (auto n = named(call, kMachineInterface, {"BindMountMachine", "BindMount"}))
        return manage(*n, "bind", {{"src", arg(n->rest, 0)}, {"dest", arg(n->rest, 1)}});
    for (auto t :
         {Target{"CopyFromMachine", "CopyFrom"}, Target{"CopyToMachine", "CopyTo"},
          Target{"CopyFromMachineWithFlags", "CopyFromWithFlags"}, Target{"CopyToMachineWithFlags", "CopyToWithFlags"}})
        if (auto n = named(call, kMachineInterface, t)) {
            // An empty destination means "the same path" (machined resolves it before asking).
            std::string src = arg(n->rest, 0), dest = arg(n->rest, 1);
            return manage(*n, "copy", {{"src", src}, {"dest", dest.empty() ? src : dest}});
        }
    if (auto n = named(call, kMachineInterface, {"OpenMachineRootDirectory", "OpenRootDirectory"}))
        return manage(*n, "open_root_directory");
    return std::nullopt;
}

std::optional<PolkitRequest> image_request(const PolkitCall& call) {
    auto manage = [](Details d) { return PolkitRequest{kPolkitManageImages, std::move(d)}; };
    if (auto n = named(call, kImageInterface, {"RemoveImage", "Remove"}))
        return manage({{"image", n->name}, {"verb", "remove"}});
    if (auto n = named(call, kImageInterface, {"RenameImage", "Rename"}))
        return manage({{"image", n->name}, {"verb", "rename"}, {"new_name", arg(n->rest, 0)}});
    if (auto n = named(call, kImageInterface, {"CloneImage", "Clone"}))
        return manage({{"image", n->name}, {"verb", "clone"}, {"new_name", arg(n->rest, 0)}});
    if (auto n = named(call, kImageInterface, {"MarkImageReadOnly", "MarkReadOnly"}))
        return manage({{"image", n->name}, {"verb", "mark_read_only"}, {"read_only", call.flag ? "1" : "0"}});
    // machined 252 names the image "machine" here.
    if (auto n = named(call, kImageInterface, {"SetImageLimit", "SetLimit"}))
        return manage({{"machine", n->name}, {"verb", "set_limit"}});
    if (call.interface == kManagerInterface && call.member == "SetPoolLimit")
        return PolkitRequest{kPolkitManageMachines, {{"verb", "set_pool_limit"}}};
    if (call.interface == kManagerInterface && call.member == "CleanPool")
        return PolkitRequest{kPolkitManageMachines, {{"verb", "clean_pool"}, {"mode", arg(call.args, 0)}}};
    return std::nullopt;
}

// importd 252 sends no details; cancelling a transfer is "pull", whatever its type.
std::optional<PolkitRequest> import_request(const PolkitCall& call) {
    if (call.interface == kImportTransferInterface)
        return call.member == "Cancel" ? std::optional(PolkitRequest{kPolkitPull, {}}) : std::nullopt;
    if (call.interface != kImportManagerInterface) return std::nullopt;
    const std::string& m = call.member;
    if (m == "ImportTar" || m == "ImportRaw" || m == "ImportFileSystem") return PolkitRequest{kPolkitImport, {}};
    if (m == "ExportTar" || m == "ExportRaw") return PolkitRequest{kPolkitExport, {}};
    if (m == "PullTar" || m == "PullRaw" || m == "CancelTransfer") return PolkitRequest{kPolkitPull, {}};
    return std::nullopt;
}

// The grant of the call being dispatched (set by the filter, cleared by the next call's filter).
struct Grant {
    sd_bus_message* message = nullptr;
    std::string action;
    void set(sd_bus_message* m, std::string a) {
        clear();
        message = sd_bus_message_ref(m);
        action = std::move(a);
    }
    void clear() {
        if (message) sd_bus_message_unref(message);
        message = nullptr;
        action.clear();
    }
};
thread_local Grant grant;

// The leading string arguments and the first boolean after them; the message is rewound after.
void read_leading_args(sd_bus_message* m, PolkitCall& call) {
    for (;;) {
        char type = 0;
        if (sd_bus_message_peek_type(m, &type, nullptr) <= 0) break;
        if (type == SD_BUS_TYPE_STRING && call.args.size() < 4) {
            const char* s = nullptr;
            if (sd_bus_message_read_basic(m, type, &s) < 0) break;
            call.args.emplace_back(s);
        } else if (type == SD_BUS_TYPE_BOOLEAN) {
            int b = 0;
            if (sd_bus_message_read_basic(m, type, &b) >= 0) call.flag = b;
            break;
        } else {
            break;
        }
    }
    sd_bus_message_rewind(m, true);
}

std::string decoded_label(const char* path, const char* prefix) {
    char* label = nullptr;
    if (!path || sd_bus_path_decode(path, prefix, &label) <= 0 || !label) return {};
    std::string out(label);
    std::free(label);
    return out;
}

}  // namespace

std::optional<PolkitRequest> polkit_request_for(const PolkitCall& call) {
    if (auto r = machine_request(call)) return r;
    if (auto r = image_request(call)) return r;
    return import_request(call);
}

std::string polkit_granted_action(sd_bus_message* message) {
    return message && message == grant.message ? grant.action : std::string();
}

// ------------------------------------------------------------------------------------------ gate

struct PolkitGate::Query {
    enum class State { Waiting, Queued, Dropped };
    PolkitGate* gate = nullptr;
    sd_bus_message* call = nullptr;  // held: one reference
    sd_bus_slot* slot = nullptr;     // the pending CheckAuthorization
    sd_bus_track* track = nullptr;   // the sender's connection
    std::string action;
    State state = State::Waiting;
    ~Query() {
        sd_bus_slot_unref(slot);
        sd_bus_track_unref(track);
        sd_bus_message_unref(call);
    }
};

PolkitGate::PolkitGate(sd_bus* bus, MachineLookup lookup) : bus_(bus), lookup_(std::move(lookup)) {
    int r = sd_bus_add_filter(bus_, &filter_slot_, on_message, this);
    if (r < 0) throw std::system_error(-r, std::generic_category(), "Failed to install the polkit filter");
}

PolkitGate::~PolkitGate() {
    sd_bus_slot_unref(filter_slot_);
    queries_.clear();
    grant.clear();
}

int PolkitGate::on_message(sd_bus_message* m, void* userdata, sd_bus_error*) {
    return static_cast<PolkitGate*>(userdata)->filter(m);
}

void PolkitGate::deny(sd_bus_message* m, const char* name, const std::string& text) {
    sd_bus_reply_method_errorf(m, name, "%s", text.c_str());
}

int PolkitGate::filter(sd_bus_message* m) {
    if (!sd_bus_message_is_method_call(m, nullptr, nullptr)) return 0;
    grant.clear();  // the previous call's dispatch is over
    if (auto it = queries_.find(m); it != queries_.end()) {
        // The call queued again after polkit said yes.
        std::unique_ptr<Query> q = std::move(it->second);
        queries_.erase(it);
        if (q->state != Query::State::Queued) return 1;  // its sender has gone: nothing runs
        grant.set(m, q->action);
        return 0;
    }

    const char* iface = sd_bus_message_get_interface(m);
    const char* member = sd_bus_message_get_member(m);
    const char* path = sd_bus_message_get_path(m);
    if (!iface || !member) return 0;
    PolkitCall call{iface, member, {}, {}, false};
    // Most calls are not gated (reads, properties): decide that before reading anything.
    if (!polkit_request_for(call)) return 0;
    if (call.interface == kMachineInterface) {
        std::string label = decoded_label(path, kMachinePathPrefix);
        call.object = label.empty() ? label : lookup_(m, label);
        if (call.object.empty()) return 0;  // no such object: the bus answers UnknownObject
    } else if (call.interface == kImageInterface) {
        call.object = decoded_label(path, kImagePathPrefix);
    }
    read_leading_args(m, call);
    auto request = polkit_request_for(call);
    if (!request) return 0;
    if (call.interface == kManagerInterface) {
        // A machine that does not exist: its handler answers NoSuchMachine, as machined does
        // before asking polkit.
        for (const auto& [key, value] : request->details)
            if (key == "machine" && request->action != kPolkitManageImages && lookup_(m, value).empty()) return 0;
    }

    try {
        // Root never asks (machined: the capability short-cut), nor the user of a per-user machd.
        if (core::caller_is_privileged(caller_of(m).uid)) return 0;
    } catch (const sdbus::Error& e) {
        deny(m, kAccessDenied, e.getMessage());
        return 1;
    }
    return start_query(m, *request);
}

int PolkitGate::start_query(sd_bus_message* m, const PolkitRequest& request) {
    if (queries_.size() >= kMaxPending) {
        deny(m, kLimitsExceeded, "Too many calls waiting for polkit.");
        return 1;
    }
    const char* sender = sd_bus_message_get_sender(m);
    if (!sender) {
        deny(m, kAccessDenied, "Access denied: the call has no sender to authorize.");
        return 1;
    }
    auto q = std::make_unique<Query>();
    q->gate = this;
    q->call = sd_bus_message_ref(m);
    q->action = request.action;

    sd_bus_message* check = nullptr;
    int r =
        sd_bus_message_new_method_call(bus_, &check, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
                                       "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization");
    std::unique_ptr<sd_bus_message, decltype(&sd_bus_message_unref)> guard(check, sd_bus_message_unref);
    if (r >= 0)
        r = sd_bus_message_append(check, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender, request.action.c_str());
    if (r >= 0) r = sd_bus_message_open_container(check, 'a', "{ss}");
    for (const auto& [key, value] : request.details)
        if (r >= 0) r = sd_bus_message_append(check, "{ss}", key.c_str(), value.c_str());
    if (r >= 0) r = sd_bus_message_close_container(check);
    // Flag 1 = AllowUserInteraction, when the caller allowed it on its message.
    if (r >= 0)
        r = sd_bus_message_append(check, "us", sd_bus_message_get_allow_interactive_authorization(m) > 0 ? 1u : 0u, "");
    if (r >= 0) r = sd_bus_track_new(bus_, &q->track, on_sender_gone, q.get());
    if (r >= 0) r = sd_bus_track_add_sender(q->track, m);
    if (r >= 0) r = sd_bus_call_async(bus_, &q->slot, check, on_reply, q.get(), 0);
    if (r < 0) {
        deny(m, kAccessDenied, std::string("Access denied: cannot ask polkit: ") + std::strerror(-r));
        return 1;
    }
    queries_.emplace(m, std::move(q));
    return 1;  // held: answered from on_reply
}

int PolkitGate::on_reply(sd_bus_message* reply, void* userdata, sd_bus_error*) {
    auto* q = static_cast<Query*>(userdata);
    q->gate->finish(*q, reply);
    return 1;
}

void PolkitGate::finish(Query& q, sd_bus_message* reply) {
    q.slot = sd_bus_slot_unref(q.slot);
    sd_bus_message* call = q.call;
    auto drop = [&] { queries_.erase(call); };  // destroys q
    if (sd_bus_message_is_method_error(reply, nullptr)) {
        const sd_bus_error* e = sd_bus_message_get_error(reply);
        bool absent = e && (sd_bus_error_has_name(e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
                            sd_bus_error_has_name(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER));
        deny(call, kAccessDenied,
             absent ? std::string("Access denied: polkit is not running.")
                    : std::string("Access denied: polkit could not check the caller: ") +
                          (e && e->message ? e->message : "error"));
        return drop();
    }
    int authorized = 0, challenge = 0;
    int r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
    if (r >= 0) r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
    if (r < 0 || !authorized) {
        if (r >= 0 && challenge) deny(call, kInteractiveRequired, "Interactive authentication required.");
        else deny(call, kAccessDenied, "Access denied: polkit did not authorize " + q.action + ".");
        return drop();
    }
    // Dispatch the call again, now authorized; the filter sees it first and hands over the grant.
    sd_bus_message_rewind(call, true);
    r = sd_bus_enqueue_for_read(bus_, call);
    if (r < 0) {
        deny(call, kAccessDenied, std::string("Access denied: cannot dispatch the authorized call: ") + std::strerror(-r));
        return drop();
    }
    q.state = Query::State::Queued;
}

PolkitGate::MachineLookup polkit_machine_lookup(core::MachineService& service) {
    return [&service](sd_bus_message* call, const std::string& label) -> std::string {
        core::Machine* m = nullptr;
        if (label == "self") {
            try {
                m = service.find_by_pid(caller_of(call).pid);
            } catch (const sdbus::Error&) {
                // no credentials: no machine
            }
        } else {
            m = service.find(label);
        }
        return m ? m->name : std::string();
    };
}

int PolkitGate::on_sender_gone(sd_bus_track*, void* userdata) {
    auto* q = static_cast<Query*>(userdata);
    // sd-bus holds its own reference while it runs this handler; dropping ours ends the tracking
    // (an empty track that stays referenced would be dispatched again).
    q->track = sd_bus_track_unref(q->track);
    if (q->state == Query::State::Queued) {
        q->state = Query::State::Dropped;  // already in the read queue: the filter drops it
        return 0;
    }
    // Still waiting: cancel the CheckAuthorization (unreffing its slot) and forget the call.
    q->gate->queries_.erase(q->call);
    return 0;
}

}  // namespace mk::bus
