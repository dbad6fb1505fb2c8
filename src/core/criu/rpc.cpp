#include "core/criu/rpc.hpp"

#include <array>
#include <stdexcept>

#include "core/criu/protobuf.hpp"

namespace mk::core::criu {

namespace {

constexpr std::array<std::pair<CgroupMode, std::string_view>, 7> kCgroupModes{{
    {CgroupMode::Ignore, "ignore"},
    {CgroupMode::None, "none"},
    {CgroupMode::Props, "props"},
    {CgroupMode::Soft, "soft"},
    {CgroupMode::Full, "full"},
    {CgroupMode::Strict, "strict"},
    {CgroupMode::Default, "default"},
}};

ProtoWriter encode_options(const Options& o) {
    ProtoWriter w;
    w.add_int32(1, o.images_dir_fd);
    if (o.pid) w.add_int32(2, *o.pid);
    if (o.leave_running) w.add_bool(3, true);
    if (o.ext_unix_sk) w.add_bool(4, true);
    if (o.tcp_established) w.add_bool(5, true);
    if (o.shell_job) w.add_bool(7, true);
    if (o.file_locks) w.add_bool(8, true);
    w.add_int32(9, o.log_level);
    if (!o.log_file.empty()) w.add_bytes(10, o.log_file);
    if (o.notify_scripts) w.add_bool(12, true);
    if (!o.root.empty()) w.add_bytes(13, o.root);
    if (o.work_dir_fd) w.add_int32(17, *o.work_dir_fd);
    for (const auto& [key, val] : o.ext_mnt) {
        ProtoWriter m;
        m.add_bytes(1, key);
        m.add_bytes(2, val);
        w.add_message(23, m);
    }
    if (o.rst_sibling) w.add_bool(26, true);
    for (const auto& [key, fd] : o.inherit_fd) {
        ProtoWriter m;
        m.add_bytes(1, key);
        m.add_int32(2, fd);
        w.add_message(27, m);
    }
    if (o.manage_cgroups_mode) w.add_int32(34, static_cast<int32_t>(*o.manage_cgroups_mode));
    for (const auto& e : o.external) w.add_bytes(37, e);
    for (const auto& j : o.join_ns) {
        ProtoWriter m;
        m.add_bytes(1, j.ns);
        m.add_bytes(2, j.ns_file);
        w.add_message(39, m);
    }
    if (!o.freeze_cgroup.empty()) w.add_bytes(44, o.freeze_cgroup);
    if (o.timeout) w.add_varint(45, *o.timeout);
    if (o.orphan_pts_master) w.add_bool(50, true);
    return w;
}

std::string bounded(std::string_view s) { return std::string(s.substr(0, kMaxRpcString)); }

void decode_version(std::string_view bytes, Version& v) {
    ProtoReader r(bytes);
    ProtoField f;
    bool major = false, minor = false;
    while (r.next(f)) {
        if (f.type == WireType::Varint) {
            if (f.number == 1) v.major = varint_int32(f.varint), major = true;
            else if (f.number == 2) v.minor = varint_int32(f.varint), minor = true;
            else if (f.number == 4) v.sublevel = varint_int32(f.varint);
        } else if (f.type == WireType::Bytes && f.number == 3) {
            v.gitid = bounded(f.bytes);
        }
    }
    if (!major || !minor) throw std::runtime_error("criu_version without its required numbers");
}

}  // namespace

std::string_view to_string(CgroupMode mode) noexcept {
    for (const auto& [m, name] : kCgroupModes)
        if (m == mode) return name;
    return "unknown";
}

std::optional<CgroupMode> cgroup_mode_from_string(std::string_view name) noexcept {
    for (const auto& [m, n] : kCgroupModes)
        if (n == name) return m;
    return std::nullopt;
}

std::string encode_request(const Request& req) {
    ProtoWriter w;
    w.add_int32(1, static_cast<int32_t>(req.type));
    if (req.opts) w.add_message(2, encode_options(*req.opts));
    if (req.notify_success) w.add_bool(3, *req.notify_success);
    if (req.keep_open) w.add_bool(4, true);
    if (req.features) {
        ProtoWriter f;
        if (req.features->mem_track) f.add_bool(1, *req.features->mem_track);
        if (req.features->lazy_pages) f.add_bool(2, *req.features->lazy_pages);
        if (req.features->pidfd_store) f.add_bool(3, *req.features->pidfd_store);
        w.add_message(5, f);
    }
    return w.data();
}

Response decode_response(std::string_view bytes) {
    Response resp;
    bool have_type = false, have_success = false;
    ProtoReader r(bytes);
    ProtoField f;
    while (r.next(f)) {
        if (f.type == WireType::Varint) {
            switch (f.number) {
            case 1:
                resp.type = static_cast<ReqType>(varint_int32(f.varint));
                have_type = true;
                break;
            case 2:
                resp.success = f.varint != 0;
                have_success = true;
                break;
            case 7: resp.cr_errno = varint_int32(f.varint); break;
            default: break;  // unknown scalars (status, ...): ignored, as protobuf does
            }
            continue;
        }
        if (f.type != WireType::Bytes) continue;
        ProtoReader sub(f.bytes);
        ProtoField g;
        switch (f.number) {
        case 3:  // criu_dump_resp
            while (sub.next(g))
                if (g.number == 1 && g.type == WireType::Varint) resp.restored = g.varint != 0;
            break;
        case 4:  // criu_restore_resp
            while (sub.next(g))
                if (g.number == 1 && g.type == WireType::Varint) resp.restore_pid = varint_int32(g.varint);
            if (!resp.restore_pid) throw std::runtime_error("criu_restore_resp without its pid");
            break;
        case 5:  // criu_notify
            while (sub.next(g)) {
                if (g.number == 1 && g.type == WireType::Bytes) resp.notify_script = bounded(g.bytes);
                else if (g.number == 2 && g.type == WireType::Varint) resp.notify_pid = varint_int32(g.varint);
            }
            break;
        case 8: {  // criu_features
            Features feat;
            while (sub.next(g)) {
                if (g.type != WireType::Varint) continue;
                if (g.number == 1) feat.mem_track = g.varint != 0;
                else if (g.number == 2) feat.lazy_pages = g.varint != 0;
                else if (g.number == 3) feat.pidfd_store = g.varint != 0;
            }
            resp.features = feat;
            break;
        }
        case 9: resp.cr_errmsg = bounded(f.bytes); break;
        case 10: {
            Version v;
            decode_version(f.bytes, v);
            resp.version = v;
            break;
        }
        default: break;
        }
    }
    if (!have_type || !have_success) throw std::runtime_error("criu_resp without its required type and success fields");
    return resp;
}

std::string to_string(const Version& v) {
    std::string s = std::to_string(v.major) + "." + std::to_string(v.minor);
    if (v.sublevel) s += "." + std::to_string(v.sublevel);
    return s;
}

}  // namespace mk::core::criu
