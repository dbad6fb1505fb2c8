#include "varlink/machine_api.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>

#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/image/image_files.hpp"
#include "core/machine/bind.hpp"
#include "core/machine/copy.hpp"
#include "core/machine/inspect.hpp"
#include "core/machine/machine_error.hpp"
#include "core/machine/owner.hpp"
#include "core/machine/shell.hpp"
#include "varlink/idl.hpp"
#include "varlink/json_writer.hpp"
#include "varlink/params.hpp"

namespace mk::varlink {
namespace {

using core::Machine;

void require_root(const Request& r) {
    if (!core::caller_is_privileged(r.peer().uid)) throw_permission_denied();
}

[[noreturn]] void no_such_machine() { throw Error("io.systemd.Machine.NoSuchMachine"); }

uint64_t pidfd_inode(int pidfd) {
    struct stat st {};
    return pidfd >= 0 && ::fstat(pidfd, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

// The machine a call names by `name` and/or `pid` (0: the caller's own machine), as machined's
// lookup_machine_by_name_or_pid(). Both given: they must agree.
Machine& lookup(core::MachineService& svc, const Request& r, const Params& p) {
    auto name = p.string("name");
    auto pid = p.process_id("pid");
    if (!name && !pid) throw_invalid_parameter("name");
    Machine* by_name = nullptr;
    if (name) {
        // Lookups accept ".host" (machined's VALID_HOSTNAME_DOT_HOST); registrations do not.
        if (*name != ".host" && !core::machine_name_is_valid(*name)) throw_invalid_parameter("name");
        by_name = svc.find(*name);
        if (!by_name) no_such_machine();
    }
    if (pid) {
        pid_t want = pid->pid == 0 ? r.peer().pid : static_cast<pid_t>(pid->pid);
        Machine* by_pid = svc.find_by_pid(want);
        if (!by_pid || (by_name && by_name != by_pid)) no_such_machine();
        return *by_pid;
    }
    return *by_name;
}

std::string string_array(const std::vector<std::string>& v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); i++) {
        if (i) out.push_back(',');
        append_json_string(out, v[i]);
    }
    out.push_back(']');
    return out;
}

std::string env_array(const std::map<std::string, std::string>& env) {
    std::vector<std::string> v;
    for (const auto& [k, value] : env) v.push_back(k + "=" + value);
    return string_array(v);
}

// One List record (machined's list_machine_one()), appended to `out` as JSON text; metadata errors
// are thrown unless `graceful`. Written straight into the reply buffer: no string per field.
void append_machine_record(std::string& out, Machine& m, std::string_view metadata) {
    ObjectWriter w(out);
    w.string("name", m.name);
    if (m.has_id()) w.string("id", core::id128_to_string(m.id));
    if (!m.service.empty()) w.string("service", m.service);
    if (m.klass != core::MachineClass::unknown) w.string("class", core::to_string(m.klass));
    if (m.leader > 0) {
        ObjectWriter p = w.object("leader");
        p.number("pid", static_cast<uint64_t>(m.leader));
        // fstat() of a pidfd costs a microsecond or more: once per machine, not once per listing.
        if (!m.leader_pidfd_id) m.leader_pidfd_id = pidfd_inode(m.leader_pidfd.get());
        if (m.leader_pidfd_id) p.number("pidfdId", m.leader_pidfd_id);
        p.close();
    }
    if (m.supervisor > 0) w.object("supervisor").number("pid", static_cast<uint64_t>(m.supervisor)).close();
    if (!m.root_directory.empty()) w.string("rootDirectory", m.root_directory);
    if (!m.unit.empty()) w.string("unit", m.unit);
    if (m.realtime_usec || m.monotonic_usec)
        w.object("timestamp").number("realtime", m.realtime_usec).number("monotonic", m.monotonic_usec).close();
    if (m.vsock_cid != UINT32_MAX) w.number("vSockCid", m.vsock_cid);
    if (!m.ssh_address.empty()) w.string("sshAddress", m.ssh_address);
    if (!m.ssh_private_key_path.empty()) w.string("sshPrivateKeyPath", m.ssh_private_key_path);
    if (!m.control_address.empty()) w.string("controlAddress", m.control_address);
    if (metadata == "yes" || metadata == "graceful") {
        bool graceful = metadata == "graceful";
        auto attempt = [&](auto&& f) {
            try {
                f();
            } catch (...) {
                if (!graceful) throw;
            }
        };
        attempt([&] {
            std::string addrs = "[";
            for (const auto& a : core::machine_addresses(m)) {
                if (addrs.size() > 1) addrs.push_back(',');
                addrs += "{\"family\":" + std::to_string(a.family) + ",\"address\":[";
                for (size_t i = 0; i < a.bytes.size(); i++) addrs += (i ? "," : "") + std::to_string(a.bytes[i]);
                addrs += "]}";
            }
            addrs.push_back(']');
            w.raw("addresses", addrs);
        });
        attempt([&] { w.raw("OSRelease", env_array(core::machine_os_release(m))); });
        attempt([&] { w.number("UIDShift", core::machine_uid_shift(m)); });
    }
    w.close();
}

void register_machine(MachineContext& ctx, Request& r) {
    Params p(r.parameters(), {"name", "id", "service", "class", "leader", "leaderProcessId", "supervisor",
                              "supervisorProcessId", "rootDirectory", "ifIndices", "vSockCid", "sshAddress",
                              "sshPrivateKeyPath", "controlAddress", "allocateUnit", "allowInteractiveAuthentication"});
    require_root(r);
    core::RegisterRequest req;
    req.name = Params::required(p.string("name"), "name");
    if (!core::machine_name_is_valid(req.name)) throw_invalid_parameter("name");
    if (auto id = p.string("id")) {
        auto parsed = core::id128_from_string(*id);
        if (!parsed) throw_invalid_parameter("id");
        if (std::any_of(parsed->begin(), parsed->end(), [](uint8_t b) { return b != 0; }))
            req.id.assign(parsed->begin(), parsed->end());
    }
    req.service = p.string("service").value_or("");
    req.klass = Params::required(p.enumeration("class", {"container", "vm", "host"}), "class");
    if (req.klass == "host") throw_invalid_parameter("class");  // only machd itself adds .host
    auto leader = p.integer("leader", 1, INT32_MAX);
    auto leader_pid = p.process_id("leaderProcessId");
    (void)p.integer("supervisor", 0, INT32_MAX);  // ignored: the supervisor is the peer, as in 262
    (void)p.process_id("supervisorProcessId");
    if (leader && leader_pid && *leader != leader_pid->pid) throw_invalid_parameter("leaderProcessId");
    if (leader_pid && leader_pid->pid <= 0) throw_invalid_parameter("leaderProcessId");
    req.leader = leader ? static_cast<pid_t>(*leader) : leader_pid ? static_cast<pid_t>(leader_pid->pid) : r.peer().pid;
    if (leader_pid && leader_pid->pidfd_id) {
        // The pidfd inode names the process for good: a recycled PID is not the process meant.
        core::UniqueFd fd = core::pin_leader(req.leader);
        if (pidfd_inode(fd.get()) != leader_pid->pidfd_id)
            throw Error(kSystemError, Json{{"errno", ESRCH}, {"errnoName", "ESRCH"}});
    }
    req.root_directory = p.string("rootDirectory").value_or("");
    if (!req.root_directory.empty() && req.root_directory.front() != '/') throw_invalid_parameter("rootDirectory");
    for (int64_t i : p.integers("ifIndices", 1, INT32_MAX).value_or(std::vector<int64_t>{}))
        req.netif.push_back(static_cast<int>(i));
    auto vsock = p.integer("vSockCid", 0, UINT32_MAX);
    auto ssh_address = p.string("sshAddress");
    auto ssh_key = p.string("sshPrivateKeyPath");
    if (ssh_key && (ssh_key->empty() || ssh_key->front() != '/')) throw_invalid_parameter("sshPrivateKeyPath");
    auto control = p.string("controlAddress");
    if (control && control->empty()) throw_invalid_parameter("controlAddress");
    req.create_scope = p.boolean("allocateUnit").value_or(false);
    (void)p.boolean("allowInteractiveAuthentication");
    Machine& m = ctx.machines.register_machine(std::move(req));
    m.supervisor = r.peer().pid;
    if (vsock) m.vsock_cid = static_cast<uint32_t>(*vsock);
    if (ssh_address) m.ssh_address = *ssh_address;
    if (ssh_key) m.ssh_private_key_path = *ssh_key;
    if (control) m.control_address = *control;
    // The systemd backend starts the scope asynchronously: answer when its job ends.
    if (m.state == core::MachineState::opening) return ctx.registrations.add(m.name, r);
    r.reply(Json::object());
}

void list_machines(MachineContext& ctx, Request& r) {
    Params p(r.parameters(), {"name", "pid", "allowInteractiveAuthentication", "acquireMetadata"});
    std::string metadata = p.enumeration("acquireMetadata", {"no", "yes", "graceful"}).value_or("no");
    if (p.string("name") || p.process_id("pid")) {
        Machine& m = lookup(ctx.machines, r, p);
        std::string record;
        append_machine_record(record, m, metadata);
        return r.reply_text(record);
    }
    if (!r.more()) return r.error(kExpectedMore);
    auto all = ctx.machines.registry().all();
    if (all.empty()) no_such_machine();
    r.reply_each(all.size(), [&](size_t i, std::string& out) { append_machine_record(out, *all[i], metadata); });
}

void kill_machine(MachineContext& ctx, Request& r) {
    Params p(r.parameters(), {"name", "pid", "allowInteractiveAuthentication", "whom", "signal"});
    Machine& m = lookup(ctx.machines, r, p);
    std::string whom = p.enumeration("whom", {"leader", "supervisor", "all"}).value_or("all");
    int sig = static_cast<int>(Params::required(p.integer("signal", 1, _NSIG - 1), "signal"));
    require_root(r);
    if (whom == "supervisor") {
        if (m.supervisor <= 0) throw Error("io.systemd.Machine.NotSupported");
        if (::kill(m.supervisor, sig) < 0) throw std::system_error(errno, std::generic_category(), "kill supervisor");
    } else {
        ctx.machines.kill(m, whom, sig);
    }
    r.reply(Json::object());
}

std::vector<core::UniqueFd> one_fd(core::UniqueFd fd) {
    std::vector<core::UniqueFd> v;
    v.push_back(std::move(fd));
    return v;
}

void open_machine(MachineContext& ctx, Request& r) {
    Params p(r.parameters(),
             {"name", "pid", "allowInteractiveAuthentication", "mode", "user", "path", "args", "environment"});
    std::string mode = Params::required(p.enumeration("mode", {"tty", "login", "shell"}), "mode");
    core::ShellRequest shell;
    shell.user = p.string("user").value_or("");
    shell.path = p.string("path").value_or("");
    shell.args = p.strings("args").value_or(std::vector<std::string>{});
    shell.environment = p.strings("environment").value_or(std::vector<std::string>{});
    if (mode != "shell") {
        // As machined: these only mean something for a shell.
        for (const char* k : {"user", "path", "args", "environment"})
            if (r.parameters().contains(k) && !r.parameters()[k].is_null()) throw_invalid_parameter(k);
    }
    Machine& m = lookup(ctx.machines, r, p);
    require_root(r);
    if (mode == "shell") {
        auto pty = ctx.machines.open_shell(m, shell);
        return r.reply(Json{{"ptyFileDescriptor", 0}, {"ptyPath", pty.path}}, one_fd(std::move(pty.master)));
    }
    auto pty = core::open_machine_pty(m);
    if (mode == "tty") return r.reply(Json{{"ptyFileDescriptor", 0}, {"ptyPath", pty.path}}, one_fd(std::move(pty.master)));
    // login: the guest's systemd starts container-getty@N on the pty, as for OpenMachineLogin.
    std::string unit = bus::container_getty_unit(pty.path);
    auto master = std::make_shared<core::UniqueFd>(std::move(pty.master));
    Request later = r;
    ctx.logins.start(m, unit, [later, master, path = pty.path](const sdbus::Error* e) mutable {
        // The guest's bus did not answer or refused: machined says NoIPC.
        if (e) return later.error("io.systemd.Machine.NoIPC");
        later.reply(Json{{"ptyFileDescriptor", 0}, {"ptyPath", path}}, one_fd(std::move(*master)));
    });
}

void map_from(MachineContext& ctx, Request& r) {
    Params p(r.parameters(), {"name", "pid", "allowInteractiveAuthentication", "uid", "gid"});
    Machine& m = lookup(ctx.machines, r, p);
    auto uid = p.integer("uid", 0, UINT32_MAX - 1);
    auto gid = p.integer("gid", 0, UINT32_MAX - 1);
    if (!uid && !gid) throw_invalid_parameter("uid");
    Json out = Json::object();
    if (uid) out["uid"] = core::map_from_machine(m, static_cast<uint32_t>(*uid), false);
    if (gid) out["gid"] = core::map_from_machine(m, static_cast<uint32_t>(*gid), true);
    r.reply(out);
}

void map_to(MachineContext& ctx, Request& r) {
    Params p(r.parameters(), {"uid", "gid"});
    auto uid = p.integer("uid", 0, UINT32_MAX - 1);
    auto gid = p.integer("gid", 0, UINT32_MAX - 1);
    if (!uid && !gid) throw_invalid_parameter("uid");
    // IDs below 0x10000 belong to the host (as the D-Bus MapToMachineUser).
    if (uid && *uid < 0x10000) throw Error("io.systemd.Machine.UserInHostRange");
    if (gid && *gid < 0x10000) throw Error("io.systemd.Machine.GroupInHostRange");
    Json out = Json::object();
    std::string owner;
    auto find = [&](uint32_t outer, bool group) {
        for (Machine* m : ctx.machines.registry().all())
            if (auto inner = core::map_to_machine(*m, outer, group)) {
                if (!owner.empty() && owner != m->name) break;
                owner = m->name;
                out[group ? "gid" : "uid"] = *inner;
                return;
            }
        throw Error(group ? "io.systemd.Machine.NoSuchGroup" : "io.systemd.Machine.NoSuchUser");
    };
    if (uid) find(static_cast<uint32_t>(*uid), false);
    if (gid) find(static_cast<uint32_t>(*gid), true);
    out["machineName"] = owner;
    r.reply(out);
}

void bind_mount(MachineContext& ctx, Request& r) {
    Params p(r.parameters(),
             {"name", "pid", "allowInteractiveAuthentication", "source", "destination", "readOnly", "mkdir"});
    std::string source = Params::required(p.string("source"), "source");
    std::string destination = p.string("destination").value_or(source);
    bool read_only = p.boolean("readOnly").value_or(false);
    bool mkdir = p.boolean("mkdir").value_or(false);
    Machine& m = lookup(ctx.machines, r, p);
    require_root(r);
    core::bind_mount_into_machine(m, source, destination, read_only, mkdir);
    r.reply(Json::object());
}

void copy(MachineContext& ctx, Request& r, bool to_machine) {
    Params p(r.parameters(), {"name", "pid", "allowInteractiveAuthentication", "source", "destination", "replace"});
    std::string source = Params::required(p.string("source"), "source");
    std::string destination = p.string("destination").value_or(source);
    uint64_t flags = p.boolean("replace").value_or(false) ? core::kCopyReplace : 0;
    Machine& m = lookup(ctx.machines, r, p);
    require_root(r);
    Request later = r;
    ctx.copies.start_checked(m, source, destination, to_machine, flags, [later](std::exception_ptr error) mutable {
        if (!error) return later.reply(Json::object());
        try {
            std::rethrow_exception(error);
        } catch (const sdbus::Error&) {
            // Only the bound on running copies throws these.
            later.error(kSystemError, Json{{"errno", EBUSY}, {"errnoName", "EBUSY"}});
        } catch (...) {
            later.error_from_current_exception();
        }
    });
}

void open_root(MachineContext& ctx, Request& r) {
    Params p(r.parameters(), {"name", "pid", "allowInteractiveAuthentication"});
    Machine& m = lookup(ctx.machines, r, p);
    require_root(r);
    r.reply(Json{{"fileDescriptor", 0}}, one_fd(core::open_machine_root(m)));
}

// Unregister, Terminate: a lookup, root, one core call.
template <typename F>
Method simple(MachineContext& ctx, F f) {
    return [&ctx, f](Request& r) {
        Params p(r.parameters(), {"name", "pid", "allowInteractiveAuthentication"});
        Machine& m = lookup(ctx.machines, r, p);
        require_root(r);
        f(ctx.machines, m);
        r.reply(Json::object());
    };
}

// ------------------------------------------------------------------------------ io.systemd.MachineImage

[[noreturn]] void no_such_image() { throw Error("io.systemd.MachineImage.NoSuchImage"); }

std::string image_name(const Params& p, const char* key) {
    std::string name = Params::required(p.string(key), key);
    if (!core::image_name_is_valid(name)) throw_invalid_parameter(key);
    return name;
}

core::ImageInfo find_image(core::ImagePool& pool, const std::string& name, bool with_usage = false) {
    auto info = pool.find(name, with_usage);
    if (!info) no_such_image();
    return *info;
}

void check_not_busy(core::MachineService& machines, const core::ImageInfo& info) {
    if (core::image_in_use(machines, info.path))
        throw std::system_error(EBUSY, std::generic_category(), "image " + info.name + " is in use by a running machine");
}

std::vector<std::string> env_lines(const std::map<std::string, std::string>& env) {
    std::vector<std::string> out;
    for (const auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
}

// hostname, machineId, machineInfo, OSRelease of a directory image (core/image/image_files.hpp).
void image_metadata(core::ImagePool& pool, const core::ImageInfo& info, Json& j) {
    core::UniqueFd root = core::open_image_root(pool, info);
    if (auto h = core::image_hostname(root.get()); !h.empty()) j["hostname"] = h;
    if (auto id = core::image_machine_id(root.get())) j["machineId"] = core::id128_to_string(*id);
    if (auto mi = core::image_machine_info(root.get()); !mi.empty()) j["machineInfo"] = env_lines(mi);
    if (auto os = core::image_os_release(root.get())) j["OSRelease"] = env_lines(*os);
}

Json image_record(core::ImagePool& pool, const core::ImageInfo& info, const std::string& metadata) {
    Json j{{"name", info.name},
           {"path", info.path},
           {"type", std::string(core::to_string(info.type))},
           {"class", "machine"},
           {"readOnly", info.read_only}};
    auto put = [&](const char* key, uint64_t v, bool known) {
        if (known) j[key] = v;
    };
    put("creationTimestamp", info.crtime_usec, info.crtime_usec != 0);
    put("modificationTimestamp", info.mtime_usec, info.mtime_usec != 0);
    put("usage", info.usage, info.usage != core::kUnknownSize);
    put("usageExclusive", info.usage_exclusive, info.usage_exclusive != core::kUnknownSize);
    put("limit", info.limit, info.limit != core::kUnknownSize);
    put("limitExclusive", info.limit_exclusive, info.limit_exclusive != core::kUnknownSize);
    if (metadata == "yes") {
        image_metadata(pool, info, j);
    } else if (metadata == "graceful") {
        try {
            image_metadata(pool, info, j);
        } catch (...) {
        }
    }
    return j;
}

void list_images(core::ImagePool& pool, Request& r) {
    Params p(r.parameters(), {"name", "acquireMetadata", "allowInteractiveAuthentication"});
    std::string metadata = p.enumeration("acquireMetadata", {"no", "yes", "graceful"}).value_or("no");
    if (p.string("name")) return r.reply(image_record(pool, find_image(pool, image_name(p, "name"), true), metadata));
    if (!r.more()) return r.error(kExpectedMore);
    auto all = pool.list(true);
    if (all.empty()) no_such_image();
    for (size_t i = 0; i + 1 < all.size(); i++) r.notify(image_record(pool, all[i], metadata));
    r.reply(image_record(pool, all.back(), metadata));
}

void update_image(core::MachineService& machines, core::ImagePool& pool, Request& r) {
    Params p(r.parameters(), {"name", "allowInteractiveAuthentication", "newName", "readOnly", "limit"});
    std::string name = image_name(p, "name");
    std::optional<std::string> new_name;
    if (p.string("newName")) new_name = image_name(p, "newName");
    auto read_only = p.boolean("readOnly");
    auto limit = p.integer("limit", 0, INT64_MAX);
    require_root(r);
    auto info = find_image(pool, name);
    if (new_name || read_only) check_not_busy(machines, info);
    if (new_name) {
        pool.rename(name, *new_name);
        name = *new_name;
    }
    if (read_only) pool.set_read_only(name, *read_only);
    if (limit) pool.set_limit(name, static_cast<uint64_t>(*limit));
    r.reply(Json::object());
}

void clone_image(core::ImagePool& pool, Request& r) {
    Params p(r.parameters(), {"name", "allowInteractiveAuthentication", "newName", "readOnly"});
    std::string name = image_name(p, "name");
    std::string new_name = image_name(p, "newName");
    bool read_only = p.boolean("readOnly").value_or(false);
    require_root(r);
    find_image(pool, name);
    pool.clone(name, new_name, read_only);
    r.reply(Json::object());
}

void remove_image(core::MachineService& machines, core::ImagePool& pool, Request& r) {
    Params p(r.parameters(), {"name", "allowInteractiveAuthentication"});
    std::string name = image_name(p, "name");
    require_root(r);
    check_not_busy(machines, find_image(pool, name));
    pool.remove(name);
    r.reply(Json::object());
}

void set_pool_limit(core::ImagePool& pool, Request& r) {
    Params p(r.parameters(), {"allowInteractiveAuthentication", "limit"});
    auto limit = Params::required(p.integer("limit", 0, INT64_MAX), "limit");
    require_root(r);
    pool.set_pool_limit(static_cast<uint64_t>(limit));
    r.reply(Json::object());
}

void clean_pool(core::MachineService& machines, core::ImagePool& pool, Request& r) {
    Params p(r.parameters(), {"allowInteractiveAuthentication", "mode"});
    std::string mode = Params::required(p.enumeration("mode", {"all", "hidden"}), "mode");
    require_root(r);
    // As the D-Bus CleanPool: hidden images are never listed, read-only and busy ones are kept.
    std::vector<core::ImageInfo> removed;
    // OCI layers no stack links any more, as the D-Bus CleanPool (a running transfer keeps them).
    for (auto& [layer, bytes] : pool.remove_unused_oci_layers(false)) {
        core::ImageInfo gone;
        gone.name = layer;
        removed.push_back(gone);
    }
    if (mode == "all")
        for (const auto& i : pool.list(true)) {
            if (i.read_only || core::image_in_use(machines, i.path)) continue;
            pool.remove(i.name);
            removed.push_back(i);
        }
    auto record = [](const core::ImageInfo& i) {
        Json j{{"name", i.name}};
        if (i.usage_exclusive != core::kUnknownSize) j["usageExclusive"] = i.usage_exclusive;
        return j;
    };
    // An empty result is one empty reply: the call succeeded and removed nothing.
    if (removed.empty()) return r.reply(Json::object());
    for (size_t i = 0; i + 1 < removed.size(); i++) r.notify(record(removed[i]));
    r.reply(record(removed.back()));
}

}  // namespace

void PendingRegistrations::machine_removed(const core::Machine& m) {
    auto node = pending_.extract(m.name);
    if (!node.empty()) node.mapped().error(kSystemError, Json{{"errno", ESRCH}, {"errnoName", "ESRCH"}});
}

void PendingRegistrations::machine_start_finished(core::Machine& m, const std::string& error) {
    auto node = pending_.extract(m.name);
    if (node.empty()) return;
    if (error.empty()) return node.mapped().reply(Json::object());
    std::fprintf(stderr, "machd: scope of machine %s did not start: %s\n", m.name.c_str(), error.c_str());
    node.mapped().error(kSystemError, Json{{"errno", EIO}, {"errnoName", "EIO"}});
}

Interface machine_image_interface(core::MachineService& machines, core::ImagePool& pool) {
    Interface i;
    i.name = "io.systemd.MachineImage";
    i.description = std::string(idl::kIoSystemdMachineImage);
    i.domain = Domain::image;
    i.methods["List"] = {[&pool](Request& r) { list_images(pool, r); }, true, false};
    i.methods["Update"] = {[&machines, &pool](Request& r) { update_image(machines, pool, r); }};
    i.methods["Clone"] = {[&pool](Request& r) { clone_image(pool, r); }};
    i.methods["Remove"] = {[&machines, &pool](Request& r) { remove_image(machines, pool, r); }};
    i.methods["SetPoolLimit"] = {[&pool](Request& r) { set_pool_limit(pool, r); }};
    i.methods["CleanPool"] = {[&machines, &pool](Request& r) { clean_pool(machines, pool, r); }, true, true};
    return i;
}

Interface machine_interface(MachineContext& ctx) {
    Interface i;
    i.name = "io.systemd.Machine";
    i.description = std::string(idl::kIoSystemdMachine);
    i.domain = Domain::machine;
    auto bind = [&ctx](void (*f)(MachineContext&, Request&)) { return [&ctx, f](Request& r) { f(ctx, r); }; };
    i.methods["Register"] = {bind(register_machine)};
    i.methods["Unregister"] = {simple(ctx, [](core::MachineService& s, Machine& m) { s.unregister(m); })};
    i.methods["Terminate"] = {simple(ctx, [](core::MachineService& s, Machine& m) { s.terminate(m); })};
    i.methods["Kill"] = {bind(kill_machine)};
    i.methods["List"] = {bind(list_machines), true, false};
    i.methods["Open"] = {bind(open_machine)};
    i.methods["MapFrom"] = {bind(map_from)};
    i.methods["MapTo"] = {bind(map_to)};
    i.methods["BindMount"] = {bind(bind_mount)};
    i.methods["CopyFrom"] = {[&ctx](Request& r) { copy(ctx, r, false); }};
    i.methods["CopyTo"] = {[&ctx](Request& r) { copy(ctx, r, true); }};
    i.methods["OpenRootDirectory"] = {bind(open_root)};
    return i;
}

}  // namespace mk::varlink
