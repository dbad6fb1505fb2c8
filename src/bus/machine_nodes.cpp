#include "bus/machine_nodes.hpp"

#include <systemd/sd-bus.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "bus/errors.hpp"
#include "bus/raw_message.hpp"
#include "core/base/names.hpp"
#include "core/machine/machine.hpp"

namespace mk::bus {

using core::Machine;

namespace {

using Target = MachineNodes::Target;

Target& target(void* userdata) { return *static_cast<Target*>(userdata); }
Machine& machine(void* userdata) { return *target(userdata).machine; }

// Runs a handler body; any exception becomes the D-Bus error the Manager would have sent.
template <typename F>
int serve(sd_bus_error* error, F&& f) {
    try {
        return f();
    } catch (...) {
        sdbus::Error e = current_exception_to_bus_error();
        return sd_bus_error_set(error, e.getName().c_str(), e.getMessage().c_str());
    }
}

void check(int r) {
    if (r < 0) throw std::system_error(-r, std::generic_category(), "Failed to read the call or marshal the reply");
}

std::vector<std::string> read_strv(sd_bus_message* m) {
    char** l = nullptr;
    check(sd_bus_message_read_strv(m, &l));
    std::vector<std::string> out;
    for (char** i = l; i && *i; ++i) {
        out.emplace_back(*i);
        std::free(*i);
    }
    std::free(l);
    return out;
}

int reply_pty(sd_bus_message* m, const std::tuple<sdbus::UnixFd, std::string>& pty) {
    return sd_bus_reply_method_return(m, "hs", std::get<0>(pty).get(), std::get<1>(pty).c_str());
}

// ------------------------------------------------------------------------------------ methods

int method_terminate(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] {
        MachineOps::terminate(caller_of(m), target(userdata).nodes->service(), machine(userdata));
        return sd_bus_reply_method_return(m, nullptr);
    });
}

int method_kill(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] {
        const char* who = nullptr;
        int32_t sig = 0;
        check(sd_bus_message_read(m, "si", &who, &sig));
        MachineOps::kill(caller_of(m), target(userdata).nodes->service(), machine(userdata), who, sig);
        return sd_bus_reply_method_return(m, nullptr);
    });
}

int method_get_addresses(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] {
        auto addresses = MachineOps::addresses(machine(userdata));
        sd_bus_message* reply = nullptr;
        check(sd_bus_message_new_method_return(m, &reply));
        std::unique_ptr<sd_bus_message, decltype(&sd_bus_message_unref)> guard(reply, sd_bus_message_unref);
        check(sd_bus_message_open_container(reply, 'a', "(iay)"));
        for (const auto& a : addresses) {
            check(sd_bus_message_open_container(reply, 'r', "iay"));
            check(sd_bus_message_append(reply, "i", a.get<0>()));
            check(sd_bus_message_append_array(reply, 'y', a.get<1>().data(), a.get<1>().size()));
            check(sd_bus_message_close_container(reply));
        }
        check(sd_bus_message_close_container(reply));
        return sd_bus_send(nullptr, reply, nullptr);
    });
}

int method_get_os_release(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] {
        auto fields = MachineOps::os_release(machine(userdata));
        sd_bus_message* reply = nullptr;
        check(sd_bus_message_new_method_return(m, &reply));
        std::unique_ptr<sd_bus_message, decltype(&sd_bus_message_unref)> guard(reply, sd_bus_message_unref);
        check(sd_bus_message_open_container(reply, 'a', "{ss}"));
        for (const auto& [k, v] : fields) check(sd_bus_message_append(reply, "{ss}", k.c_str(), v.c_str()));
        check(sd_bus_message_close_container(reply));
        return sd_bus_send(nullptr, reply, nullptr);
    });
}

int method_get_uid_shift(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] { return sd_bus_reply_method_return(m, "u", MachineOps::uid_shift(machine(userdata))); });
}

int method_open_pty(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] { return reply_pty(m, MachineOps::open_pty(caller_of(m), machine(userdata))); });
}

// Replies when the guest's systemd has queued the getty (or failed to): from the loop, later.
int method_open_login(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] {
        Caller caller = caller_of(m);
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        MachineOps::open_login(caller, machine(userdata), target(userdata).nodes->logins(),
                               [call](const sdbus::Error* e, sdbus::UnixFd master, const std::string& path) {
                                   if (e)
                                       sd_bus_reply_method_errorf(call.get(), e->getName().c_str(), "%s",
                                                                  e->getMessage().c_str());
                                   else sd_bus_reply_method_return(call.get(), "hs", master.get(), path.c_str());
                               });
        return 1;
    });
}

int method_open_shell(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] {
        const char* user = nullptr;
        const char* path = nullptr;
        check(sd_bus_message_read(m, "ss", &user, &path));
        std::string u = user, p = path;  // read_strv moves on in the message
        auto args = read_strv(m);
        auto env = read_strv(m);
        return reply_pty(
            m, MachineOps::open_shell(caller_of(m), target(userdata).nodes->service(), machine(userdata), u, p, args, env));
    });
}

int method_bind_mount(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] {
        const char* source = nullptr;
        const char* destination = nullptr;
        int read_only = 0, mkdir = 0;
        check(sd_bus_message_read(m, "ssbb", &source, &destination, &read_only, &mkdir));
        MachineOps::bind_mount(caller_of(m), machine(userdata), source, destination, read_only, mkdir);
        return sd_bus_reply_method_return(m, nullptr);
    });
}

int copy(sd_bus_message* m, void* userdata, sd_bus_error* error, bool to_machine, bool with_flags) {
    return serve(error, [&] {
        const char* source = nullptr;
        const char* destination = nullptr;
        uint64_t flags = 0;
        check(sd_bus_message_read(m, "ss", &source, &destination));
        if (with_flags) check(sd_bus_message_read(m, "t", &flags));
        Caller caller = caller_of(m);
        // The reply goes out when the helper exits: keep the call alive until then.
        std::shared_ptr<sd_bus_message> call(sd_bus_message_ref(m), sd_bus_message_unref);
        target(userdata).nodes->copies().start(
            caller, machine(userdata), source, destination, to_machine, flags, [call](const sdbus::Error* e) {
                if (e) sd_bus_reply_method_errorf(call.get(), e->getName().c_str(), "%s", e->getMessage().c_str());
                else sd_bus_reply_method_return(call.get(), nullptr);
            });
        return 1;
    });
}

int method_copy_from(sd_bus_message* m, void* u, sd_bus_error* e) { return copy(m, u, e, false, false); }
int method_copy_to(sd_bus_message* m, void* u, sd_bus_error* e) { return copy(m, u, e, true, false); }
int method_copy_from_flags(sd_bus_message* m, void* u, sd_bus_error* e) { return copy(m, u, e, false, true); }
int method_copy_to_flags(sd_bus_message* m, void* u, sd_bus_error* e) { return copy(m, u, e, true, true); }

int method_open_root(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] {
        auto fd = MachineOps::open_root(caller_of(m), machine(userdata));
        return sd_bus_reply_method_return(m, "h", fd.get());
    });
}

// --------------------------------------------------------------------------------- properties

#define MK_GETTER(fn, body)                                                                                        \
    int fn(sd_bus*, const char*, const char*, const char*, sd_bus_message* reply, void* userdata, sd_bus_error*) { \
        const Machine& mc = machine(userdata);                                                                     \
        body;                                                                                                      \
    }

MK_GETTER(get_name, return sd_bus_message_append(reply, "s", mc.name.c_str()))
// Empty when unset, else 16 bytes (observed from machined 252).
MK_GETTER(get_id, return sd_bus_message_append_array(reply, 'y', mc.id.data(), mc.has_id() ? mc.id.size() : 0))
MK_GETTER(get_timestamp, return sd_bus_message_append(reply, "t", uint64_t{mc.realtime_usec}))
MK_GETTER(get_timestamp_monotonic, return sd_bus_message_append(reply, "t", uint64_t{mc.monotonic_usec}))
MK_GETTER(get_service, return sd_bus_message_append(reply, "s", mc.service.c_str()))
MK_GETTER(get_unit, return sd_bus_message_append(reply, "s", mc.unit.c_str()))
MK_GETTER(get_leader, return sd_bus_message_append(reply, "u", static_cast<uint32_t>(mc.leader)))
// to_string() names are literals: NUL-terminated.
MK_GETTER(get_class, return sd_bus_message_append(reply, "s", core::to_string(mc.klass).data()))
MK_GETTER(get_root_directory, return sd_bus_message_append(reply, "s", mc.root_directory.c_str()))
static_assert(sizeof(int) == sizeof(int32_t));
MK_GETTER(get_network_interfaces,
          return sd_bus_message_append_array(reply, 'i', mc.netif.data(), mc.netif.size() * sizeof(int)))
MK_GETTER(get_state, return sd_bus_message_append(reply, "s", core::to_string(mc.state).data()))

#undef MK_GETTER

constexpr uint64_t kConst = SD_BUS_VTABLE_PROPERTY_CONST;
constexpr uint64_t kMethod = SD_BUS_VTABLE_UNPRIVILEGED;  // machd checks callers itself

// machined 252's Machine interface: same members, signatures, argument names and flags.
const sd_bus_vtable kMachineVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Name", "s", get_name, 0, kConst),
    SD_BUS_PROPERTY("Id", "ay", get_id, 0, kConst),
    SD_BUS_PROPERTY("Timestamp", "t", get_timestamp, 0, kConst),
    SD_BUS_PROPERTY("TimestampMonotonic", "t", get_timestamp_monotonic, 0, kConst),
    SD_BUS_PROPERTY("Service", "s", get_service, 0, kConst),
    SD_BUS_PROPERTY("Unit", "s", get_unit, 0, kConst),
    SD_BUS_PROPERTY("Leader", "u", get_leader, 0, kConst),
    SD_BUS_PROPERTY("Class", "s", get_class, 0, kConst),
    SD_BUS_PROPERTY("RootDirectory", "s", get_root_directory, 0, kConst),
    SD_BUS_PROPERTY("NetworkInterfaces", "ai", get_network_interfaces, 0, kConst),
    SD_BUS_PROPERTY("State", "s", get_state, 0, 0),
    SD_BUS_METHOD_WITH_NAMES("Terminate", "", "", "", "", method_terminate, kMethod),
    SD_BUS_METHOD_WITH_NAMES("Kill", "si", SD_BUS_PARAM(who) SD_BUS_PARAM(signal), "", "", method_kill, kMethod),
    SD_BUS_METHOD_WITH_NAMES("GetAddresses", "", "", "a(iay)", SD_BUS_PARAM(addresses), method_get_addresses, kMethod),
    SD_BUS_METHOD_WITH_NAMES("GetOSRelease", "", "", "a{ss}", SD_BUS_PARAM(fields), method_get_os_release, kMethod),
    SD_BUS_METHOD_WITH_NAMES("GetUIDShift", "", "", "u", SD_BUS_PARAM(shift), method_get_uid_shift, kMethod),
    SD_BUS_METHOD_WITH_NAMES("OpenPTY", "", "", "hs", SD_BUS_PARAM(pty) SD_BUS_PARAM(pty_path), method_open_pty, kMethod),
    SD_BUS_METHOD_WITH_NAMES("OpenLogin", "", "", "hs", SD_BUS_PARAM(pty) SD_BUS_PARAM(pty_path), method_open_login,
                             kMethod),
    SD_BUS_METHOD_WITH_NAMES("OpenShell", "ssasas",
                             SD_BUS_PARAM(user) SD_BUS_PARAM(path) SD_BUS_PARAM(args) SD_BUS_PARAM(environment), "hs",
                             SD_BUS_PARAM(pty) SD_BUS_PARAM(pty_path), method_open_shell, kMethod),
    SD_BUS_METHOD_WITH_NAMES("BindMount", "ssbb",
                             SD_BUS_PARAM(source) SD_BUS_PARAM(destination) SD_BUS_PARAM(read_only) SD_BUS_PARAM(mkdir), "",
                             "", method_bind_mount, kMethod),
    SD_BUS_METHOD_WITH_NAMES("CopyFrom", "ss", SD_BUS_PARAM(source) SD_BUS_PARAM(destination), "", "", method_copy_from,
                             kMethod),
    SD_BUS_METHOD_WITH_NAMES("CopyTo", "ss", SD_BUS_PARAM(source) SD_BUS_PARAM(destination), "", "", method_copy_to,
                             kMethod),
    SD_BUS_METHOD_WITH_NAMES("CopyFromWithFlags", "sst", SD_BUS_PARAM(source) SD_BUS_PARAM(destination) SD_BUS_PARAM(flags),
                             "", "", method_copy_from_flags, kMethod),
    SD_BUS_METHOD_WITH_NAMES("CopyToWithFlags", "sst", SD_BUS_PARAM(source) SD_BUS_PARAM(destination) SD_BUS_PARAM(flags),
                             "", "", method_copy_to_flags, kMethod),
    SD_BUS_METHOD_WITH_NAMES("OpenRootDirectory", "", "", "h", SD_BUS_PARAM(fd), method_open_root, kMethod),
    SD_BUS_VTABLE_END,
};

// ListMachines: the hot call of every `machinectl list` and desktop poll. Rows are appended
// straight from the registry, one reused path buffer, no per-row allocation.
int method_list_machines(sd_bus_message* m, void* userdata, sd_bus_error* error) {
    return serve(error, [&] {
        auto all = static_cast<MachineNodes*>(userdata)->service().registry().all();
        sd_bus_message* reply = nullptr;
        check(sd_bus_message_new_method_return(m, &reply));
        std::unique_ptr<sd_bus_message, decltype(&sd_bus_message_unref)> guard(reply, sd_bus_message_unref);
        check(sd_bus_message_open_container(reply, 'a', "(ssso)"));
        std::string path = std::string(kMachinePathPrefix) + "/";
        const size_t base = path.size();
        path.reserve(base + 3 * 64);
        for (const Machine* mc : all) {
            path.resize(base);
            core::append_bus_label(path, mc->name);
            // Field by field: appendv would parse the "(ssso)" format again for every row.
            check(sd_bus_message_open_container(reply, 'r', "ssso"));
            check(sd_bus_message_append_basic(reply, 's', mc->name.c_str()));
            check(sd_bus_message_append_basic(reply, 's', core::to_string(mc->klass).data()));
            check(sd_bus_message_append_basic(reply, 's', mc->service.c_str()));
            check(sd_bus_message_append_basic(reply, 'o', path.c_str()));
            check(sd_bus_message_close_container(reply));
        }
        check(sd_bus_message_close_container(reply));
        return sd_bus_send(nullptr, reply, nullptr);
    });
}

const sd_bus_vtable kManagerVtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_NAMES("ListMachines", "", "", "a(ssso)", SD_BUS_PARAM(machines), method_list_machines, kMethod),
    SD_BUS_VTABLE_END,
};

int find(sd_bus* bus, const char* path, const char*, void* userdata, void** found, sd_bus_error*) {
    auto* t = static_cast<MachineNodes*>(userdata)->resolve(bus, path);
    if (!t) return 0;
    *found = t;
    return 1;
}

int enumerate(sd_bus*, const char*, void* userdata, char*** nodes, sd_bus_error*) {
    auto all = static_cast<MachineNodes*>(userdata)->service().registry().all();
    auto* l = static_cast<char**>(std::calloc(all.size() + 1, sizeof(char*)));
    if (!l) return -ENOMEM;
    size_t n = 0;
    for (Machine* m : all) {
        l[n] = strdup(machine_object_path(m->name).c_str());
        if (!l[n]) {
            for (size_t i = 0; i < n; ++i) std::free(l[i]);
            std::free(l);
            return -ENOMEM;
        }
        ++n;
    }
    *nodes = l;
    return 0;
}

}  // namespace

sd_bus* underlying_bus(sdbus::IObject& object) {
    auto signal = object.createSignal("org.freedesktop.DBus.Peer", "Probe");  // never sent
    return sd_bus_message_get_bus(raw_message(signal));
}

MachineNodes::MachineNodes(sd_bus* bus, core::MachineService& service, CopyOperations& copies, GuestUnitStarts& logins)
    : service_(service), copies_(copies), logins_(logins) {
    int r =
        sd_bus_add_fallback_vtable(bus, &vtable_slot_, kMachinePathPrefix, kMachineInterface, kMachineVtable, find, this);
    if (r >= 0) r = sd_bus_add_node_enumerator(bus, &enumerator_slot_, kMachinePathPrefix, enumerate, this);
    if (r >= 0) r = sd_bus_add_object_vtable(bus, &manager_slot_, kManagerPath, kManagerInterface, kManagerVtable, this);
    if (r < 0) {
        sd_bus_slot_unref(enumerator_slot_);
        sd_bus_slot_unref(vtable_slot_);
        throw std::system_error(-r, std::generic_category(), "Failed to register the machine objects");
    }
}

MachineNodes::~MachineNodes() {
    sd_bus_slot_unref(manager_slot_);
    sd_bus_slot_unref(enumerator_slot_);
    sd_bus_slot_unref(vtable_slot_);
}

MachineNodes::Target* MachineNodes::resolve(sd_bus* bus, const char* path) {
    char* label = nullptr;
    if (sd_bus_path_decode(path, kMachinePathPrefix, &label) <= 0 || !label) return nullptr;
    std::unique_ptr<char, decltype(&std::free)> guard(label, std::free);
    Machine* m = nullptr;
    if (std::strcmp(label, "self") == 0) {
        // The sender's own machine, by the PID the bus vouches for.
        sd_bus_message* msg = sd_bus_get_current_message(bus);
        try {
            if (msg) m = service_.find_by_pid(caller_of(msg).pid);
        } catch (const sdbus::Error&) {
            // no credentials: no machine
        }
    } else {
        m = service_.find(label);
    }
    if (!m) return nullptr;
    current_.machine = m;
    return &current_;
}

}  // namespace mk::bus
