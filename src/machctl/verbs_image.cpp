// Image verbs: list-images, image-status, show-image, clone, rename, read-only, remove, set-limit,
// clean (machine1's image methods; machd answers NotSupported until it has images).
#include <algorithm>
#include <climits>

#include "core/base/error.hpp"
#include "machctl/verbs.hpp"

namespace mk::machctl {

using core::UsageError;

int verb_list_images(Context& c, const std::vector<std::string>&) {
    auto images = bus_call("Could not get images", [&] { return c.client().list_images(); });
    std::sort(images.begin(), images.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    std::vector<std::vector<std::string>> rows;
    json out = json::array();
    for (const auto& i : images) {
        if (!c.opts.all && i.name.starts_with(".")) continue;
        rows.push_back({i.name, i.type, i.read_only ? "yes" : "no", format_bytes(i.usage),
                        i.crtime ? format_timestamp(i.crtime) : "-", i.mtime ? format_timestamp(i.mtime) : "-"});
        out.push_back({{"name", i.name},
                       {"type", i.type},
                       {"ro", i.read_only},
                       {"usage", i.usage == UINT64_MAX ? json(nullptr) : json(i.usage)},
                       {"created", i.crtime},
                       {"modified", i.mtime}});
    }
    if (c.is_json()) {
        c.emit_table_json(out);
        return 0;
    }
    if (rows.empty()) {
        if (!c.opts.no_legend) std::printf("No images.\n");
        return 0;
    }
    c.print_table({"NAME", "TYPE", "RO", "USAGE", "CREATED", "MODIFIED"}, rows, TableStyle{{false, false, false, true}});
    if (!c.opts.no_legend) std::printf("\n%zu images listed.\n", rows.size());
    return 0;
}

int verb_image_status(Context& c, const std::vector<std::string>& names) {
    if (names.empty()) return show_objects(c, names, true);
    json all = json::array();
    bool first = true;
    for (const auto& name : names) {
        auto path = bus_call("Could not get path to image", [&] { return c.client().image_path(name); });
        auto props = bus_call("Could not get properties", [&] { return c.client().properties(path, kImageInterface); });
        std::map<std::string, std::string> os;
        std::string hostname;
        try {
            os = c.client().image_os_release(name);
        } catch (const ClientError& e) {
            if (e.kind != ClientError::Kind::remote) throw;
        }
        try {
            hostname = c.client().image_hostname(name);
        } catch (const ClientError& e) {
            if (e.kind != ClientError::Kind::remote) throw;
        }
        std::vector<uint8_t> machine_id;
        try {
            machine_id = c.client().image_machine_id(name);
        } catch (const ClientError& e) {
            if (e.kind != ClientError::Kind::remote) throw;
        }
        bool has_id =
            machine_id.size() == 16 && std::any_of(machine_id.begin(), machine_id.end(), [](uint8_t b) { return b; });
        if (c.is_json()) {
            json j = props_json(props);
            j["OS"] = os;
            j["Hostname"] = hostname;
            j["MachineID"] = has_id ? json(hex(machine_id)) : json(nullptr);
            all.push_back(j);
            continue;
        }
        auto now = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
                .count());
        auto when = [&](uint64_t t) {
            return format_timestamp(t) + (now > t ? "; " + format_timespan(now - t) + " ago" : "");
        };
        if (!first) std::printf("\n");
        first = false;
        std::printf("%s\n", name.c_str());
        std::printf("\t    Type: %s\n", prop_or<std::string>(props, "Type", "").c_str());
        std::printf("\t    Path: %s\n", prop_or<std::string>(props, "Path", "").c_str());
        if (!hostname.empty()) std::printf("\tHostname: %s\n", hostname.c_str());
        if (has_id) std::printf("      Machine ID: %s\n", hex(machine_id).c_str());
        std::string pretty = get(os, "PRETTY_NAME");
        if (pretty.empty()) pretty = get(os, "NAME");
        if (!pretty.empty()) std::printf("\t      OS: %s\n", pretty.c_str());
        std::printf("\t      RO: %s\n", prop_or<bool>(props, "ReadOnly", false) ? "read-only" : "writable");
        if (auto t = prop_or<uint64_t>(props, "CreationTimestamp", 0)) std::printf("\t Created: %s\n", when(t).c_str());
        if (auto t = prop_or<uint64_t>(props, "ModificationTimestamp", 0)) std::printf("\tModified: %s\n", when(t).c_str());
        if (auto u = prop_or<uint64_t>(props, "Usage", UINT64_MAX); u != UINT64_MAX)
            std::printf("\t   Usage: %s\n", format_bytes(u).c_str());
        if (auto l = prop_or<uint64_t>(props, "Limit", UINT64_MAX); l != UINT64_MAX)
            std::printf("\t   Limit: %s\n", format_bytes(l).c_str());
    }
    if (c.is_json()) c.emit_json(all.size() == 1 && c.opts.output != Output::json_seq ? all[0] : all);
    return 0;
}

int verb_clone(Context& c, const std::vector<std::string>& a) {
    bus_call("Could not clone image", [&] { c.client().clone_image(a[0], a[1], c.opts.read_only); });
    return 0;
}

int verb_rename(Context& c, const std::vector<std::string>& a) {
    bus_call("Could not rename image", [&] { c.client().rename_image(a[0], a[1]); });
    return 0;
}

int verb_read_only(Context& c, const std::vector<std::string>& a) {
    bool ro = true;
    if (a.size() > 1) {
        const auto& v = a[1];
        if (v == "1" || v == "yes" || v == "true" || v == "on") ro = true;
        else if (v == "0" || v == "no" || v == "false" || v == "off") ro = false;
        else throw UsageError("Failed to parse read-only boolean: " + v);
    }
    bus_call("Could not mark image read-only", [&] { c.client().mark_image_read_only(a[0], ro); });
    return 0;
}

int verb_remove(Context& c, const std::vector<std::string>& names) {
    for (const auto& n : names) bus_call("Could not remove image", [&] { c.client().remove_image(n); });
    return 0;
}

int verb_set_limit(Context& c, const std::vector<std::string>& a) {
    uint64_t bytes = parse_bytes(a.back());
    if (a.size() == 1) bus_call("Could not set limit", [&] { c.client().set_pool_limit(bytes); });
    else bus_call("Could not set limit", [&] { c.client().set_image_limit(a[0], bytes); });
    return 0;
}

int verb_clean(Context& c, const std::vector<std::string>&) {
    auto removed = bus_call("Could not clean pool", [&] { return c.client().clean_pool(c.opts.all ? "all" : "hidden"); });
    if (c.is_json()) {
        json out = json::array();
        for (const auto& [n, sz] : removed) out.push_back({{"name", n}, {"size", sz}});
        c.emit_json(out);
        return 0;
    }
    if (c.opts.quiet) return 0;
    for (const auto& [n, sz] : removed) {
        if (sz == UINT64_MAX) std::fprintf(stderr, "Removed image '%s'\n", n.c_str());
        else
            std::fprintf(stderr, "Removed image '%s'. Freed exclusive disk space: %s\n", n.c_str(),
                         format_bytes(sz).c_str());
    }
    std::fprintf(stderr, "Removed %zu images in total.\n", removed.size());
    return 0;
}

int verb_show_image(Context& c, const Args& names) { return show_objects(c, names, true); }

}  // namespace mk::machctl
