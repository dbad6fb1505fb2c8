// The transfer operations machd-transfer runs, one per process: import (tar, raw, file system),
// export (tar, raw) and pull (tar, raw). Each builds the image under a hidden ".#" name inside
// the pool and renames it into place only when complete (and verified, for pulls); on any error
// the temporary entry is removed before the exception leaves, so nothing half-made remains.
//
// Not thread-safe (one operation per process is the design); the hooks may be called from a
// decoder thread, so they must be safe to call concurrently with the caller (a single write(2)
// per line is).
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "core/image/compress.hpp"
#include "core/image/pool.hpp"
#include "core/image/pull.hpp"

namespace mk::core {

enum class TransferType {
    import_tar,
    import_raw,
    import_fs,
    export_tar,
    export_raw,
    pull_tar,
    pull_raw,
    import_oci,
    pull_oci
};
// (import_oci and pull_oci run through oci_store.hpp.)
// "import-tar", ... (machd-transfer verbs; import1's Transfer.Type property uses the same words).
std::string_view to_string(TransferType t);
std::optional<TransferType> transfer_type_from_string(std::string_view s);

struct TransferHooks {
    std::function<void(unsigned percent)> progress;  // 0..100, called when the value changes
    std::function<void(const std::string&)> log;
    const std::atomic<bool>* cancel = nullptr;  // set asynchronously (SIGTERM); checked per block
};

struct ImportOptions {
    bool force = false;      // replace an existing image of the same name
    bool read_only = false;  // mark the new image read-only
    unsigned threads = 0;    // decoder threads (0: all CPUs)
    TransferHooks hooks;
};

struct ExportImageOptions {
    Compression compression = Compression::none;
    CompressOptions compress;
    TransferHooks hooks;
};

// Input: a regular file or a pipe (anything else is refused, B-35). Compression by magic.
void import_tar(ImagePool& pool, int in_fd, const std::string& name, const ImportOptions& opts);
// Writes NAME.raw, sparse. qcow2 input is refused with a clear error (not supported yet).
void import_raw(ImagePool& pool, int in_fd, const std::string& name, const ImportOptions& opts);
// Copies the directory tree `dir_fd` (reflinks where the file system can).
void import_fs(ImagePool& pool, int dir_fd, const std::string& name, const ImportOptions& opts);

// The tree export_tar writes: a directory image's directory, or a layer stack's merged view (a
// read-only detached overlay of rw/ over its layers, as the container sees it: whiteouts and
// opaque directories hide what they hide, none of them is in the tree). Making the overlay needs
// CAP_SYS_ADMIN: machd-transfer opens the tree before it enters its sandbox. For a stack, the
// layer lock is held shared (ImagePool::lock_oci_layers) as long as `layers_lock` is open, so a
// remove of another stack does not sweep a layer the export reads.
struct ExportTree {
    UniqueFd tree;
    UniqueFd layers_lock;
};
ExportTree open_export_tree(ImagePool& pool, const std::string& name);
// Output: a regular file or a pipe; a terminal is refused.
void export_tar(int tree_fd, const std::string& name, int out_fd, const ExportImageOptions& opts);
void export_raw(ImagePool& pool, const std::string& name, int out_fd, const ExportImageOptions& opts);

// Downloads into ".#pull-XXXXXXXX" in the pool (hashing on the way), verifies per `verify`, then
// imports from the downloaded file. `gpg` is needed for VerifyMode::signature.
void pull_tar(ImagePool& pool, const std::string& url, const std::string& name, VerifyMode verify, GpgVerifier* gpg,
              const ImportOptions& opts);
void pull_raw(ImagePool& pool, const std::string& url, const std::string& name, VerifyMode verify, GpgVerifier* gpg,
              const ImportOptions& opts);

}  // namespace mk::core
