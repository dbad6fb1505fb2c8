#include "core/image/transfer_ops.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "core/base/error.hpp"
#include "core/base/human.hpp"
#include "core/base/names.hpp"
#include "core/base/string_table.hpp"
#include "core/image/archive.hpp"
#include "core/image/image_files.hpp"
#include "core/image/sha256sums.hpp"

namespace mk::core {

namespace {

// Maps byte counts to percentages within [base, base+span] and only reports changes.
class Progress {
public:
    Progress(const TransferHooks& h, unsigned base = 0, unsigned span = 100) : h_(h), base_(base), span_(span) {}
    void update(uint64_t done, uint64_t total) {
        if (h_.cancel && h_.cancel->load()) throw_errno(ECANCELED, "transfer cancelled");
        if (!h_.progress || total == 0) return;
        unsigned p = base_ + static_cast<unsigned>(std::min<uint64_t>(done, total) * span_ / total);
        if (p != last_.exchange(p)) h_.progress(p);
    }
    void set(unsigned p) {
        if (h_.progress && p != last_.exchange(p)) h_.progress(p);
    }

private:
    const TransferHooks& h_;
    unsigned base_, span_;
    std::atomic<unsigned> last_{~0u};
};

// Counts the bytes read from the input (compressed side) and checks for cancellation.
class CountingSource final : public ByteSource {
public:
    CountingSource(int fd, uint64_t total, Progress& p) : fd_(fd), total_(total), p_(p) {}
    size_t read(void* buf, size_t n) override {
        size_t r = fd_.read(buf, n);
        done_ += r;
        p_.update(done_, total_);
        return r;
    }

private:
    FdSource fd_;
    uint64_t done_ = 0;
    uint64_t total_;
    Progress& p_;
};

class HashingSink final : public ByteSink {
public:
    HashingSink(int fd, Sha256& h) : fd_(fd), h_(h) {}
    void write(const void* b, size_t n) override {
        fd_.write(b, n);
        h_.update(b, n);
    }

private:
    FdSink fd_;
    Sha256& h_;
};

struct stat check_input(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) throw_last_error("cannot stat the input");
    if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode))
        throw UsageError("the input must be a regular file or a pipe");
    return st;
}

void check_output(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) throw_last_error("cannot stat the output");
    if (isatty(fd)) throw UsageError("refusing to write an image to a terminal");
    if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode) && !S_ISCHR(st.st_mode))
        throw UsageError("the output must be a regular file or a pipe");
}

void check_target(ImagePool& pool, const std::string& name, bool force) {
    if (!image_name_is_valid(name)) throw UsageError("invalid image name '" + name + "'");
    if (!force) pool.check_free(name);
}

void log(const TransferHooks& h, const std::string& m) {
    if (h.log) h.log(m);
}

std::unique_ptr<ByteSource> open_input(int fd, const struct stat& st, Progress& p, const ImportOptions& o, Compression* c) {
    uint64_t total = S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
    auto counted = std::make_unique<CountingSource>(fd, total, p);
    DecompressOptions d;
    d.threads = o.threads;
    auto dec = make_auto_decompressor(std::move(counted), c, d);
    log(o.hooks, "Input compression: " + std::string(to_string(*c)) + ".");
    // Decode on a thread of its own so it overlaps with writing files (like `xz -dc | tar -x`).
    return make_threaded_source(std::move(dec), o.hooks.cancel);
}

void do_import_tar(ImagePool& pool, int in_fd, const std::string& name, const ImportOptions& o, Progress& p) {
    check_target(pool, name, o.force);
    struct stat st = check_input(in_fd);
    Compression c;
    auto src = open_input(in_fd, st, p, o, &c);
    auto tmp = pool.make_temp("import-", true);
    ExtractOptions eo;
    eo.warn = [&](const std::string& m) { log(o.hooks, m); };
    ExtractStats s = extract_tar(*src, tmp.fd(), eo);
    if (s.devices_skipped)
        log(o.hooks, "Skipped " + std::to_string(s.devices_skipped) + " device node" + (s.devices_skipped == 1 ? "" : "s") +
                         " (first " + s.first_device_skipped + "): the container gets its own /dev.");
    tmp.install(name, o.force, o.read_only);
    log(o.hooks, "Imported " + std::to_string(s.entries) + " entries (" + std::to_string(s.file_bytes) +
                     " bytes of file data) as image '" + name + "'.");
    p.set(100);
}

void do_import_raw(ImagePool& pool, int in_fd, const std::string& name, const ImportOptions& o, Progress& p) {
    check_target(pool, name, o.force);
    struct stat st = check_input(in_fd);
    Compression c;
    auto dec = open_input(in_fd, st, p, o, &c);
    auto peek = std::make_unique<PeekSource>(std::move(dec));
    auto head = peek->peek(4);
    if (head.size() == 4 && head[0] == 'Q' && head[1] == 'F' && head[2] == 'I' && head[3] == 0xfb)
        throw UsageError("qcow2 images are not supported yet; convert with qemu-img convert -f qcow2 -O raw");
    auto tmp = pool.make_temp("import-", false, ".raw");
    uint64_t n = copy_sparse(*peek, tmp.fd());
    if (fsync(tmp.fd()) < 0 && errno == ENOSPC) throw_last_error("disk full while writing the image");
    tmp.install(name + ".raw", o.force, o.read_only);
    log(o.hooks, "Imported " + std::to_string(n) + " bytes as image '" + name + "'.");
    p.set(100);
}

constexpr std::array<EnumName<TransferType>, 9> kTransferTypeNames{{
    {TransferType::import_tar, "import-tar"},
    {TransferType::import_raw, "import-raw"},
    {TransferType::import_fs, "import-fs"},
    {TransferType::export_tar, "export-tar"},
    {TransferType::export_raw, "export-raw"},
    {TransferType::pull_tar, "pull-tar"},
    {TransferType::pull_raw, "pull-raw"},
    {TransferType::import_oci, "import-oci"},
    {TransferType::pull_oci, "pull-oci"},
}};

}  // namespace

std::string_view to_string(TransferType t) { return enum_to_string(kTransferTypeNames, t, "?"); }

std::optional<TransferType> transfer_type_from_string(std::string_view s) { return enum_from_string(kTransferTypeNames, s); }

void import_tar(ImagePool& pool, int in_fd, const std::string& name, const ImportOptions& o) {
    Progress p(o.hooks);
    do_import_tar(pool, in_fd, name, o, p);
}

void import_raw(ImagePool& pool, int in_fd, const std::string& name, const ImportOptions& o) {
    Progress p(o.hooks);
    do_import_raw(pool, in_fd, name, o, p);
}

void import_fs(ImagePool& pool, int dir_fd, const std::string& name, const ImportOptions& o) {
    check_target(pool, name, o.force);
    struct stat st;
    if (fstat(dir_fd, &st) < 0 || !S_ISDIR(st.st_mode)) throw UsageError("import-fs needs a directory");
    Progress p(o.hooks);
    p.set(0);
    auto tmp = pool.make_temp("import-", true);
    copy_tree(dir_fd, tmp.fd());
    tmp.install(name, o.force, o.read_only);
    log(o.hooks, "Imported directory tree as image '" + name + "'.");
    p.set(100);
}

ExportTree open_export_tree(ImagePool& pool, const std::string& name) {
    auto info = pool.find(name);
    if (!info) throw_errno(ENOENT, "no image '" + name + "'");
    if (info->type != ImageType::directory && info->type != ImageType::subvolume && info->type != ImageType::mstack)
        throw UsageError("only directory images and layer stacks can be exported as tar; '" + name + "' is " +
                         std::string(to_string(info->type)));
    if (info->type == ImageType::mstack) {
        ExportTree t;
        t.layers_lock = pool.lock_oci_layers(false, true);
        // The mount's fd is a path: open its root for reading (which keeps the detached mount).
        UniqueFd mnt = open_image_root(pool, *info);
        t.tree.reset(openat(mnt.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!t.tree) throw_last_error("cannot open the merged view of image '" + name + "'");
        return t;
    }
    UniqueFd dir(openat(pool.fd(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) throw_last_error("cannot open image '" + name + "'");
    return ExportTree{std::move(dir), UniqueFd()};
}

void export_tar(int tree_fd, const std::string& name, int out_fd, const ExportImageOptions& o) {
    check_output(out_fd);
    Progress p(o.hooks);
    uint64_t total = tree_file_bytes(tree_fd);
    auto sink = make_compressor(o.compression, std::make_unique<FdSink>(out_fd), o.compress);
    ExportOptions eo;
    eo.warn = [&](const std::string& m) { log(o.hooks, m); };
    eo.on_bytes = [&](uint64_t done) { p.update(done, total); };
    // A stack without rw/ shows its top layer's root, with the pool's note of the layer's usage.
    eo.root_skip_xattrs = {kLayerUsageXattr};
    write_tar(tree_fd, *sink, eo);
    log(o.hooks, "Exported image '" + name + "' as " + std::string(to_string(o.compression)) + " tar.");
    p.set(100);
}

void export_raw(ImagePool& pool, const std::string& name, int out_fd, const ExportImageOptions& o) {
    auto info = pool.find(name);
    if (!info) throw_errno(ENOENT, "no image '" + name + "'");
    if (info->type != ImageType::raw) throw UsageError("only raw images can be exported as raw");
    check_output(out_fd);
    UniqueFd in(openat(pool.fd(), (name + ".raw").c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) throw_last_error("cannot open image '" + name + "'");
    struct stat st;
    if (fstat(in.get(), &st) < 0) throw_last_error("stat");
    Progress p(o.hooks);
    CountingSource src(in.get(), static_cast<uint64_t>(st.st_size), p);
    auto sink = make_compressor(o.compression, std::make_unique<FdSink>(out_fd), o.compress);
    copy_stream(src, *sink);
    sink->finish();
    p.set(100);
}

namespace {

// importd's download status line, at most once a second: "Got 40% of URL. 3s left at 1.2M/s."
// machinectl and machctl print it; the rate is in bytes per second of the download itself.
class DownloadStatus {
public:
    DownloadStatus(const TransferHooks& h, std::string url) : h_(h), url_(std::move(url)) {}
    void update(uint64_t done, uint64_t total) {
        auto now = std::chrono::steady_clock::now();
        if (now - last_ < std::chrono::seconds(1)) return;
        last_ = now;
        double elapsed = std::chrono::duration<double>(now - start_).count();
        if (elapsed <= 0) return;
        std::string rate = format_bytes(static_cast<uint64_t>(static_cast<double>(done) / elapsed)) + "/s";
        if (total == 0 || done == 0) {
            log(h_, "Got " + format_bytes(done) + " of " + url_ + ". At " + rate + ".");
            return;
        }
        unsigned percent = static_cast<unsigned>(std::min<uint64_t>(done, total) * 100 / total);
        auto left_usec = static_cast<uint64_t>(elapsed * 1e6 * static_cast<double>(total - std::min(done, total)) /
                                               static_cast<double>(done));
        log(h_, "Got " + std::to_string(percent) + "% of " + url_ + ". " + format_timespan(left_usec) + " left at " + rate +
                    ".");
    }

private:
    const TransferHooks& h_;
    std::string url_;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_ = start_;
};

void pull(ImagePool& pool, const std::string& url, const std::string& name, VerifyMode verify, GpgVerifier* gpg,
          const ImportOptions& o, bool tar) {
    if (!url_is_valid(url)) throw UsageError("invalid URL (http:// or https:// only)");
    check_target(pool, name, o.force);
    if (verify == VerifyMode::signature && !gpg)
        throw_errno(ENOKEY,
                    "--verify=signature, but no keyring is configured (neither /etc/systemd/import-pubring.gpg "
                    "nor /usr/lib/systemd/import-pubring.gpg exists); use --verify=checksum or install a keyring");
    auto dl = pool.make_temp("pull-", false);
    Progress p(o.hooks, 0, 50);
    Sha256 hash;
    HashingSink sink(dl.fd(), hash);
    HttpOptions ho;
    ho.cancel = o.hooks.cancel;
    DownloadStatus status(o.hooks, url);
    ho.progress = [&](uint64_t done, uint64_t total) {
        p.update(done, total);
        status.update(done, total);
    };
    log(o.hooks, "Downloading " + url_last_component(url) + ".");
    uint64_t n = http_download(url, sink, ho);
    log(o.hooks, "Downloaded " + std::to_string(n) + " bytes.");
    verify_download(url, hash.hex(), verify, gpg, o.hooks.log, o.hooks.cancel);
    if (lseek(dl.fd(), 0, SEEK_SET) < 0) throw_last_error("lseek");
    Progress p2(o.hooks, 50, 50);
    if (tar) do_import_tar(pool, dl.fd(), name, o, p2);
    else do_import_raw(pool, dl.fd(), name, o, p2);
    // dl's destructor removes the download.
}

}  // namespace

void pull_tar(ImagePool& pool, const std::string& url, const std::string& name, VerifyMode verify, GpgVerifier* gpg,
              const ImportOptions& o) {
    pull(pool, url, name, verify, gpg, o, true);
}

void pull_raw(ImagePool& pool, const std::string& url, const std::string& name, VerifyMode verify, GpgVerifier* gpg,
              const ImportOptions& o) {
    pull(pool, url, name, verify, gpg, o, false);
}

}  // namespace mk::core
