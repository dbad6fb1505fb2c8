// Parsers for the untrusted documents of OCI images: image references, registries.d files,
// manifests, indexes (and their Docker v2 schema 2 twins), image configs and the registry's
// WWW-Authenticate challenge; plus the .nspawn settings an image config turns into. All pure,
// bounded and fuzzed (tests/fuzz/fuzz_oci_manifest.cpp); errors are UsageError with one line
// saying what is wrong. Thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mk::core {

inline constexpr size_t kOciManifestMax = 4 << 20;  // manifests, indexes and configs (systemd: 4 MiB)
inline constexpr size_t kOciMaxLayers = 4096;       // systemd's cap on layers per image
inline constexpr size_t kOciMaxIndexEntries = 1024;

// "sha256:<64 lowercase hex>", the only digest algorithm accepted.
bool oci_digest_is_valid(std::string_view d);
// The hex part of a valid digest.
std::string_view oci_digest_hex(std::string_view d);

// One registry's settings (registries.d). `endpoint` is "host[:port]" to talk to instead of `name`
// (a mirror); `insecure` means plain HTTP.
struct OciRegistry {
    std::string name;          // as written in references: "docker.io", "127.0.0.1:5000"
    std::string endpoint;      // where requests go; = name when not mirrored
    std::string short_prefix;  // prepended to one-component repositories ("library/")
    bool insecure = false;
};

struct OciRegistryConfig {
    std::string default_registry = "docker.io";  // for references without a registry part
    std::vector<OciRegistry> registries;         // later files override earlier ones by name
    // The registry `name` with its settings; unknown names get defaults (HTTPS, except loopback
    // hosts, which a local test registry serves over HTTP as podman assumes too).
    OciRegistry lookup(std::string_view name) const;
};

// The built-in settings: docker.io -> registry-1.docker.io with "library/" for short names.
OciRegistryConfig default_oci_registry_config();
// Applies one registries.d file to `cfg`:
//   [Registry]            one section per registry
//   Name=docker.io        required, host[:port]
//   Endpoint=mirror:5000  optional mirror to use instead
//   ShortNamePrefix=library/
//   Insecure=yes|no
//   [Defaults]
//   Registry=docker.io    for references without a registry part
// '#' and ';' start comments. Unknown keys are errors (a typo must not silently talk HTTPS to
// the wrong host). `where` names the file in errors. Throws UsageError.
void parse_oci_registries_file(std::string_view text, std::string_view where, OciRegistryConfig& cfg);

// REF = [REGISTRY/]REPOSITORY[:TAG][@DIGEST]. REGISTRY is the first component when it has a '.',
// a ':' or is "localhost"; the tag defaults to "latest" unless a digest is given.
struct OciReference {
    std::string registry;    // as written, or the default registry
    std::string repository;  // lowercase components [a-z0-9._-], with the short prefix applied
    std::string tag;         // "" when only a digest was given
    std::string digest;      // "" unless pinned
    // What /manifests/<ref> takes: the digest when pinned, else the tag.
    const std::string& manifest_ref() const { return digest.empty() ? tag : digest; }
    std::string str() const;
};
OciReference parse_oci_reference(std::string_view s, const OciRegistryConfig& cfg);

// Descriptor of a blob or a manifest.
struct OciDescriptor {
    std::string media_type;
    std::string digest;
    uint64_t size = 0;
    std::string architecture, os, variant;  // index entries only
};

enum class OciDocKind { index, manifest };
// Which kind a manifest document is, from the Content-Type (may be "") and the document's own
// mediaType; accepts OCI and Docker v2 schema 2 (list and manifest) types. Throws for others
// (Docker schema 1 included, with a hint).
OciDocKind oci_doc_kind(std::string_view content_type, std::string_view body);

std::vector<OciDescriptor> parse_oci_index(std::string_view body);
struct OciManifest {
    OciDescriptor config;
    std::vector<OciDescriptor> layers;
};
OciManifest parse_oci_manifest(std::string_view body);

// "amd64", "arm64", ... (Go's GOARCH) for the machine this runs on.
std::string_view oci_host_architecture();
// The entry for os/arch (variant ignored unless several match: then the first one). nullopt when
// none; *available lists what there is ("linux/arm64, linux/s390x").
std::optional<OciDescriptor> oci_choose_platform(const std::vector<OciDescriptor>& entries, std::string_view arch,
                                                 std::string_view os, std::string* available);

// Layer media types we unpack (tar, tar+gzip, tar+zstd in both families); others throw.
void oci_check_layer_media_type(std::string_view media_type);

struct OciImageConfig {
    std::string architecture, os;
    std::vector<std::string> entrypoint, cmd, env;
    std::string user, working_dir, stop_signal;
    std::vector<std::string> ignored;  // config keys we do not turn into settings (warned about)
};
OciImageConfig parse_oci_image_config(std::string_view body);

// Whether an image's command (the first word of Entrypoint+Cmd) is an init: /sbin/init,
// /usr/sbin/init, /lib/systemd/systemd or /usr/lib/systemd/systemd.
bool oci_command_is_init(std::string_view path);

// The .nspawn file for the image, as systemd 262 writes it: [Exec] Boot=no, Parameters=
// (Entrypoint+Cmd), User=, WorkingDirectory=, Environment=, KillSignal=. Words are quoted so the
// settings parser gives them back unchanged. An image whose command is an init gets Boot=yes
// instead, and Parameters= the init's arguments (the rest of the command), if any.
std::string oci_nspawn_settings(const OciImageConfig& c);

// WWW-Authenticate: Bearer realm="…",service="…",scope="…". nullopt for other schemes or when
// the realm is missing or not http(s).
struct OciBearerChallenge {
    std::string realm, service, scope;
};
std::optional<OciBearerChallenge> parse_www_authenticate(std::string_view header);

// The token of a token-server reply ({"token": …} or {"access_token": …}); throws when absent.
std::string parse_oci_token_reply(std::string_view body);

}  // namespace mk::core
