#include "core/image/oci_manifest.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>

#include "core/base/error.hpp"

namespace mk::core {

namespace {

using json = nlohmann::json;

constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr std::string_view kOciManifestType = "application/vnd.oci.image.manifest.v1+json";
constexpr std::string_view kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

std::string trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return std::string(s);
}

json parse_json(std::string_view body, const char* what) {
    if (body.size() > kOciManifestMax) throw UsageError(std::string(what) + " is larger than 4 MiB");
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw UsageError(std::string(what) + " is not a JSON object");
    return j;
}

std::string opt_string(const json& j, const char* key, const char* what) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return "";
    if (!it->is_string()) throw UsageError(std::string(what) + ": \"" + key + "\" is not a string");
    return it->get<std::string>();
}

std::vector<std::string> opt_strings(const json& j, const char* key, const char* what) {
    std::vector<std::string> out;
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return out;
    if (!it->is_array()) throw UsageError(std::string(what) + ": \"" + key + "\" is not a list of strings");
    if (it->size() > 65536) throw UsageError(std::string(what) + ": \"" + key + "\" has too many entries");
    for (const auto& v : *it) {
        if (!v.is_string()) throw UsageError(std::string(what) + ": \"" + key + "\" is not a list of strings");
        std::string s = v.get<std::string>();
        if (s.find('\0') != std::string::npos) throw UsageError(std::string(what) + ": NUL byte in \"" + key + "\"");
        out.push_back(std::move(s));
    }
    return out;
}

OciDescriptor parse_descriptor(const json& d, const char* what) {
    if (!d.is_object()) throw UsageError(std::string(what) + ": a descriptor is not an object");
    OciDescriptor o;
    o.media_type = opt_string(d, "mediaType", what);
    o.digest = opt_string(d, "digest", what);
    if (!oci_digest_is_valid(o.digest))
        throw UsageError(std::string(what) + ": unsupported or invalid digest '" + o.digest.substr(0, 80) +
                         "' (only sha256 is accepted)");
    auto sz = d.find("size");
    if (sz == d.end() || !sz->is_number_unsigned()) throw UsageError(std::string(what) + ": descriptor without a size");
    o.size = sz->get<uint64_t>();
    if (auto p = d.find("platform"); p != d.end() && p->is_object()) {
        o.architecture = opt_string(*p, "architecture", what);
        o.os = opt_string(*p, "os", what);
        o.variant = opt_string(*p, "variant", what);
    }
    return o;
}

bool host_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == ':' ||
           c == '[' || c == ']';
}

bool host_is_valid(std::string_view h) {
    if (h.empty() || h.size() > 255) return false;
    return std::all_of(h.begin(), h.end(), host_char_ok) && h.front() != '-' && h.front() != '.';
}

bool host_is_loopback(std::string_view h) {
    std::string_view host = h;
    if (host.starts_with("[")) host = host.substr(0, host.find(']') + 1);
    else host = host.substr(0, host.find(':'));
    return host == "localhost" || host == "[::1]" || host.starts_with("127.");
}

bool repo_component_ok(std::string_view c) {
    if (c.empty() || c.size() > 128) return false;
    if (!((c.front() >= 'a' && c.front() <= 'z') || (c.front() >= '0' && c.front() <= '9'))) return false;
    if (c.back() == '.' || c.back() == '-' || c.back() == '_') return false;
    return std::all_of(c.begin(), c.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
    });
}

bool tag_ok(std::string_view t) {
    if (t.empty() || t.size() > 128) return false;
    if (t.front() == '.' || t.front() == '-') return false;
    return std::all_of(t.begin(), t.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
               ch == '-';
    });
}

// Double-quoted for split_words(): backslash and quote escaped, control characters as \xNN.
std::string quote_word(std::string_view w) {
    std::string o = "\"";
    for (unsigned char c : w) {
        if (c == '\\' || c == '"') {
            o += '\\';
            o += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            char buf[5];
            snprintf(buf, sizeof buf, "\\x%02x", c);
            o += buf;
        } else {
            o += static_cast<char>(c);
        }
    }
    return o + "\"";
}

bool line_value_ok(std::string_view v) {
    return std::none_of(v.begin(), v.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

}  // namespace

bool oci_digest_is_valid(std::string_view d) {
    if (d.size() != 7 + 64 || !d.starts_with("sha256:")) return false;
    return std::all_of(d.begin() + 7, d.end(), is_hex);
}

std::string_view oci_digest_hex(std::string_view d) { return d.substr(7); }

OciRegistry OciRegistryConfig::lookup(std::string_view name) const {
    for (auto it = registries.rbegin(); it != registries.rend(); ++it)
        if (it->name == name) return *it;
    OciRegistry r;
    r.name = std::string(name);
    r.endpoint = r.name;
    r.insecure = host_is_loopback(name);
    return r;
}

OciRegistryConfig default_oci_registry_config() {
    OciRegistryConfig c;
    c.registries.push_back({"docker.io", "registry-1.docker.io", "library/", false});
    return c;
}

void parse_oci_registries_file(std::string_view text, std::string_view where, OciRegistryConfig& cfg) {
    if (text.size() > (1 << 20)) throw UsageError(std::string(where) + ": file is larger than 1 MiB");
    std::string section;
    std::optional<OciRegistry> cur;
    auto flush = [&](unsigned line) {
        if (!cur) return;
        if (cur->name.empty())
            throw UsageError(std::string(where) + ":" + std::to_string(line) + ": [Registry] section without Name=");
        if (cur->endpoint.empty()) cur->endpoint = cur->name;
        if (cfg.registries.size() >= 1024) throw UsageError(std::string(where) + ": more than 1024 registries");
        cfg.registries.push_back(std::move(*cur));
        cur.reset();
    };
    unsigned lineno = 0;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view raw = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
        lineno++;
        std::string line = trim(raw);
        if (line.empty() || line[0] == '#' || line[0] == ';') continue;
        auto err = [&](const std::string& m) {
            throw UsageError(std::string(where) + ":" + std::to_string(lineno) + ": " + m);
        };
        if (!line_value_ok(line)) err("control character in line");
        if (line.front() == '[') {
            if (line.back() != ']') err("malformed section header");
            flush(lineno);
            section = line.substr(1, line.size() - 2);
            if (section == "Registry") cur.emplace();
            else if (section != "Defaults") err("unknown section [" + section + "] (expected [Registry] or [Defaults])");
            continue;
        }
        size_t eq = line.find('=');
        if (eq == std::string::npos) err("expected KEY=VALUE");
        std::string key = trim(std::string_view(line).substr(0, eq));
        std::string val = trim(std::string_view(line).substr(eq + 1));
        if (section == "Defaults") {
            if (key != "Registry") err("unknown key " + key + " in [Defaults]");
            if (!host_is_valid(val)) err("invalid registry name '" + val + "'");
            cfg.default_registry = val;
        } else if (section == "Registry") {
            if (key == "Name" || key == "Endpoint") {
                if (!host_is_valid(val)) err("invalid host '" + val + "'");
                (key == "Name" ? cur->name : cur->endpoint) = val;
            } else if (key == "ShortNamePrefix") {
                std::string_view p = val;
                if (!p.empty()) {
                    if (!p.ends_with("/")) err("ShortNamePrefix= must end with '/'");
                    std::string_view body = p.substr(0, p.size() - 1);
                    size_t s = 0;
                    while (s <= body.size()) {
                        size_t e = body.find('/', s);
                        if (!repo_component_ok(body.substr(s, e == std::string_view::npos ? e : e - s)))
                            err("invalid ShortNamePrefix= '" + val + "'");
                        if (e == std::string_view::npos) break;
                        s = e + 1;
                    }
                }
                cur->short_prefix = val;
            } else if (key == "Insecure") {
                if (val == "yes" || val == "true" || val == "1") cur->insecure = true;
                else if (val == "no" || val == "false" || val == "0") cur->insecure = false;
                else err("Insecure= takes a boolean");
            } else {
                err("unknown key " + key + " in [Registry]");
            }
        } else {
            err("assignment outside a section");
        }
    }
    flush(lineno);
}

std::string OciReference::str() const {
    std::string s = registry + "/" + repository;
    if (!tag.empty()) s += ":" + tag;
    if (!digest.empty()) s += "@" + digest;
    return s;
}

OciReference parse_oci_reference(std::string_view s, const OciRegistryConfig& cfg) {
    auto bad = [&](const std::string& why) -> OciReference {
        throw UsageError("invalid image reference '" + std::string(s.substr(0, 300)) + "': " + why);
    };
    if (s.empty() || s.size() > 1024) return bad("must be 1 to 1024 characters");
    OciReference r;
    std::string_view rest = s;
    if (size_t at = rest.find('@'); at != std::string_view::npos) {
        r.digest = std::string(rest.substr(at + 1));
        if (!oci_digest_is_valid(r.digest)) return bad("the digest must be sha256:<64 lowercase hex digits>");
        rest = rest.substr(0, at);
    }
    size_t slash = rest.find('/');
    std::string_view first = rest.substr(0, slash);
    if (slash != std::string_view::npos &&
        (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos || first == "localhost")) {
        if (!host_is_valid(first)) return bad("invalid registry '" + std::string(first) + "'");
        r.registry = std::string(first);
        rest = rest.substr(slash + 1);
    } else {
        r.registry = cfg.default_registry;
    }
    size_t colon = rest.rfind(':');
    if (colon != std::string_view::npos && rest.find('/', colon) == std::string_view::npos) {
        r.tag = std::string(rest.substr(colon + 1));
        if (!tag_ok(r.tag)) return bad("invalid tag '" + r.tag + "'");
        rest = rest.substr(0, colon);
    } else if (r.digest.empty()) {
        r.tag = "latest";
    }
    if (rest.empty()) return bad("no repository name");
    size_t start = 0, comps = 0;
    while (true) {
        size_t e = rest.find('/', start);
        std::string_view c = rest.substr(start, e == std::string_view::npos ? e : e - start);
        if (!repo_component_ok(c))
            return bad("repository components are lowercase letters, digits and '._-' ('" + std::string(c) + "')");
        comps++;
        if (e == std::string_view::npos) break;
        start = e + 1;
    }
    if (comps > 32) return bad("too many path components");
    r.repository = std::string(rest);
    OciRegistry reg = cfg.lookup(r.registry);
    if (comps == 1 && !reg.short_prefix.empty()) r.repository = reg.short_prefix + r.repository;
    return r;
}

OciDocKind oci_doc_kind(std::string_view content_type, std::string_view body) {
    std::string ct = trim(content_type.substr(0, content_type.find(';')));
    std::string mt;
    if (ct.empty() || ct == "application/json" || ct == "text/plain") {
        json j = parse_json(body, "manifest");
        mt = opt_string(j, "mediaType", "manifest");
        if (mt.empty() && j.contains("manifests")) return OciDocKind::index;
        if (mt.empty() && j.contains("layers")) return OciDocKind::manifest;
    } else {
        mt = ct;
    }
    if (mt == kOciIndex || mt == kDockerList) return OciDocKind::index;
    if (mt == kOciManifestType || mt == kDockerManifest) return OciDocKind::manifest;
    if (mt.starts_with("application/vnd.docker.distribution.manifest.v1"))
        throw UsageError(
            "the registry sent a Docker schema 1 manifest, which is not supported (push the image again "
            "with a current client)");
    throw UsageError("unsupported manifest media type '" + mt.substr(0, 120) + "'");
}

std::vector<OciDescriptor> parse_oci_index(std::string_view body) {
    json j = parse_json(body, "image index");
    auto m = j.find("manifests");
    if (m == j.end() || !m->is_array()) throw UsageError("image index: no \"manifests\" list");
    if (m->size() > kOciMaxIndexEntries) throw UsageError("image index: more than 1024 entries");
    std::vector<OciDescriptor> out;
    for (const auto& d : *m) out.push_back(parse_descriptor(d, "image index"));
    return out;
}

OciManifest parse_oci_manifest(std::string_view body) {
    json j = parse_json(body, "image manifest");
    auto sv = j.find("schemaVersion");
    if (sv == j.end() || !sv->is_number_integer() || sv->get<int64_t>() != 2)
        throw UsageError("image manifest: schemaVersion is not 2");
    OciManifest m;
    auto c = j.find("config");
    if (c == j.end()) throw UsageError("image manifest: no config descriptor");
    m.config = parse_descriptor(*c, "image manifest");
    if (m.config.size > kOciManifestMax) throw UsageError("image manifest: the config is larger than 4 MiB");
    auto l = j.find("layers");
    if (l == j.end() || !l->is_array()) throw UsageError("image manifest: no \"layers\" list");
    if (l->size() > kOciMaxLayers)
        throw UsageError("image manifest: " + std::to_string(l->size()) + " layers, more than the limit of " +
                         std::to_string(kOciMaxLayers));
    for (const auto& d : *l) {
        m.layers.push_back(parse_descriptor(d, "image manifest"));
        oci_check_layer_media_type(m.layers.back().media_type);
    }
    return m;
}

std::string_view oci_host_architecture() {
#if defined(__x86_64__)
    return "amd64";
#elif defined(__aarch64__)
    return "arm64";
#elif defined(__i386__)
    return "386";
#elif defined(__arm__)
    return "arm";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return "ppc64le";
#elif defined(__s390x__)
    return "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
    return "riscv64";
#else
    return "unknown";
#endif
}

std::optional<OciDescriptor> oci_choose_platform(const std::vector<OciDescriptor>& entries, std::string_view arch,
                                                 std::string_view os, std::string* available) {
    std::string avail;
    for (const auto& e : entries) {
        if (e.architecture == arch && e.os == os) return e;
        if (e.architecture.empty() && e.os.empty()) continue;
        if (e.architecture == "unknown") continue;  // attestation manifests of buildx
        if (!avail.empty()) avail += ", ";
        avail += e.os + "/" + e.architecture + (e.variant.empty() ? "" : "/" + e.variant);
    }
    if (available) *available = avail.empty() ? "none" : avail.substr(0, 400);
    return std::nullopt;
}

void oci_check_layer_media_type(std::string_view t) {
    static constexpr std::string_view kOk[] = {
        "application/vnd.oci.image.layer.v1.tar",       "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",  "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.diff.tar.zstd",
    };
    for (auto k : kOk)
        if (t == k) return;
    if (t.find("nondistributable") != std::string_view::npos || t.find("foreign") != std::string_view::npos)
        throw UsageError("image manifest: non-distributable (foreign) layers are not supported");
    throw UsageError("image manifest: unsupported layer media type '" + std::string(t.substr(0, 120)) + "'");
}

OciImageConfig parse_oci_image_config(std::string_view body) {
    json j = parse_json(body, "image config");
    OciImageConfig c;
    c.architecture = opt_string(j, "architecture", "image config");
    c.os = opt_string(j, "os", "image config");
    auto cfg = j.find("config");
    if (cfg != j.end() && cfg->is_object()) {
        c.entrypoint = opt_strings(*cfg, "Entrypoint", "image config");
        c.cmd = opt_strings(*cfg, "Cmd", "image config");
        c.env = opt_strings(*cfg, "Env", "image config");
        c.user = opt_string(*cfg, "User", "image config");
        c.working_dir = opt_string(*cfg, "WorkingDir", "image config");
        c.stop_signal = opt_string(*cfg, "StopSignal", "image config");
        for (const char* k : {"ExposedPorts", "Volumes", "Labels", "Healthcheck", "Memory", "MemorySwap", "CpuShares"})
            if (auto it = cfg->find(k); it != cfg->end() && !it->is_null() && !it->empty()) c.ignored.emplace_back(k);
    }
    return c;
}

bool oci_command_is_init(std::string_view path) {
    static constexpr std::string_view kInits[] = {"/sbin/init", "/usr/sbin/init", "/lib/systemd/systemd",
                                                  "/usr/lib/systemd/systemd"};
    return std::find(std::begin(kInits), std::end(kInits), path) != std::end(kInits);
}

std::string oci_nspawn_settings(const OciImageConfig& c) {
    std::string o = "# Generated from the image's OCI config (untrusted, like any .nspawn file next to an image).\n";
    std::vector<std::string> argv = c.entrypoint;
    argv.insert(argv.end(), c.cmd.begin(), c.cmd.end());
    // An image made to boot (its command is an init, as systemd-in-a-container images have it) is
    // booted: Boot=yes, and the rest of the command goes to the init as its arguments.
    const bool boots = !argv.empty() && oci_command_is_init(argv.front());
    o += boots ? "[Exec]\nBoot=yes\n" : "[Exec]\nBoot=no\n";
    if (boots) argv.erase(argv.begin());
    if (!argv.empty()) {
        o += "Parameters=";
        for (size_t i = 0; i < argv.size(); i++) o += (i ? " " : "") + quote_word(argv[i]);
        o += "\n";
    }
    // Only plain values make it into the file: a user "name:group" or a relative directory would
    // be refused by the settings parser and make the whole file unusable.
    if (!c.user.empty() && line_value_ok(c.user)) {
        std::string u = c.user.substr(0, c.user.find(':'));
        if (!u.empty()) o += "User=" + u + "\n";
    }
    if (!c.working_dir.empty() && c.working_dir.front() == '/' && line_value_ok(c.working_dir))
        o += "WorkingDirectory=" + c.working_dir + "\n";
    for (const auto& e : c.env) {
        size_t eq = e.find('=');
        if (eq == 0 || eq == std::string::npos) continue;
        o += "Environment=" + quote_word(e) + "\n";
    }
    if (!c.stop_signal.empty() && line_value_ok(c.stop_signal)) {
        std::string s = c.stop_signal;
        bool numeric = std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
        bool name = std::all_of(s.begin(), s.end(),
                                [](char ch) { return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '+'; });
        if (!numeric && name) o += "KillSignal=" + (s.starts_with("SIG") ? s : "SIG" + s) + "\n";
    }
    return o;
}

std::optional<OciBearerChallenge> parse_www_authenticate(std::string_view h) {
    if (h.size() > 8192) return std::nullopt;
    std::string_view s = h;
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    if (s.size() < 7) return std::nullopt;
    std::string scheme(s.substr(0, 6));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
    if (scheme != "bearer" || s[6] != ' ') return std::nullopt;
    s.remove_prefix(7);
    OciBearerChallenge c;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (s[i] == ' ' || s[i] == ',')) i++;
        size_t eq = s.find('=', i);
        if (eq == std::string_view::npos) break;
        std::string key = trim(s.substr(i, eq - i));
        i = eq + 1;
        std::string val;
        if (i < s.size() && s[i] == '"') {
            i++;
            while (i < s.size() && s[i] != '"') {
                if (s[i] == '\\' && i + 1 < s.size()) i++;
                val += s[i++];
            }
            if (i >= s.size()) return std::nullopt;  // unterminated
            i++;
        } else {
            size_t e = s.find(',', i);
            val = trim(s.substr(i, e == std::string_view::npos ? e : e - i));
            i = e == std::string_view::npos ? s.size() : e;
        }
        if (!line_value_ok(val)) return std::nullopt;
        if (key == "realm") c.realm = val;
        else if (key == "service") c.service = val;
        else if (key == "scope") c.scope = val;
    }
    if (!(c.realm.starts_with("https://") || c.realm.starts_with("http://"))) return std::nullopt;
    if (c.realm.find_first_of(" ") != std::string::npos) return std::nullopt;
    return c;
}

std::string parse_oci_token_reply(std::string_view body) {
    if (body.size() > (1 << 20)) throw UsageError("token reply is larger than 1 MiB");
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw UsageError("the token server's reply is not a JSON object");
    std::string t = opt_string(j, "token", "token reply");
    if (t.empty()) t = opt_string(j, "access_token", "token reply");
    if (t.empty()) throw UsageError("the token server's reply has no token");
    if (t.size() > 65536 || !line_value_ok(t) || t.find(' ') != std::string::npos)
        throw UsageError("the token server's token is malformed");
    return t;
}

}  // namespace mk::core
