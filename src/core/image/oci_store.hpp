// OCI images in the image pool, laid out as systemd 260 does:
//   .oci-sha256-<hex>/   one unpacked layer, shared by every image that has it; whiteouts are
//                        overlayfs markers (char device 0/0, user.overlay.opaque="y" on opaque
//                        directories: the `userxattr` flavour, which needs no CAP_SYS_ADMIN to
//                        write and which unprivileged overlay mounts use)
//   NAME.mstack/         layer@0 (bottom) … layer@N-1 (top) -> ../.oci-sha256-<hex>, and rw/ (the
//                        writable upper layer)
//   NAME.oci-config      the image config as the registry sent it
//   NAME.nspawn          settings derived from the config (untrusted, like any .nspawn file there)
// or, with --flatten, a plain directory NAME holding the merged layers (bootable with -b if the
// image has an init).
//
// Layers are unpacked once through the safe extractor (archive.hpp) while their digest and size
// are verified; a layer becomes visible (renamed into place) only when complete and verified, and
// the image only when every layer is. On any error or cancellation the temporaries are removed
// and nothing else changes: layers of other images are never touched.
#pragma once

#include <atomic>
#include <string>
#include <string_view>
#include <vector>

#include "core/image/oci_manifest.hpp"
#include "core/image/oci_registry.hpp"
#include "core/image/pool.hpp"
#include "core/image/transfer_ops.hpp"

namespace mk::core {

// ".oci-sha256-<hex>" for a valid digest.
std::string oci_layer_dir_name(std::string_view digest);

struct OciInstallOptions {
    bool force = false;      // replace an existing image of the same name
    bool flatten = false;    // a plain directory instead of a layer stack
    bool read_only = false;  // flattened images only (a stack's layers are read-only anyway)
    unsigned parallel = 3;   // layers fetched and unpacked at once (1..8)
    std::string arch;        // "" = this machine's (oci_host_architecture())
    std::string os = "linux";
    OciFetchOptions fetch;  // timeouts; cancel is taken from hooks
    OciRegistryConfig registries = default_oci_registry_config();
    TransferHooks hooks;
};

// `ref` as machctl pull-oci takes it; `name` the image name.
void pull_oci(ImagePool& pool, const std::string& ref, const std::string& name, const OciInstallOptions& opts);
// `src_fd`: an OCI image layout directory, or an oci-archive tar (a regular file or pipe).
void import_oci(ImagePool& pool, int src_fd, const std::string& name, const OciInstallOptions& opts);

// Turns the OCI whiteouts of a freshly extracted layer into overlayfs markers: ".wh.NAME" becomes
// a char device 0/0 named NAME (dropped when NAME exists in the same layer), ".wh..wh..opq" the
// user.overlay.opaque xattr of its directory, other ".wh..wh.*" entries are dropped. A whiteout
// naming "." or ".." fails (EINVAL). user.overlay.* xattrs the archive brought on directories are
// removed: only our markers may steer the overlay.
void oci_convert_whiteouts(int layer_fd);

// Merges the unpacked layers (bottom first) into the empty directory `dest_fd`, applying their
// whiteouts and opaque markers: what overlayfs would show, as plain files.
void oci_flatten_layers(const std::vector<int>& layer_fds, int dest_fd);

}  // namespace mk::core
