#include "core/image/oci_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/human.hpp"
#include "core/base/names.hpp"
#include "core/base/tree_copy.hpp"
#include "core/image/archive.hpp"
#include "core/image/sha256sums.hpp"

namespace mk::core {

namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
constexpr const char* kOpaqueXattr = "user.overlay.opaque";

void log(const TransferHooks& h, const std::string& m) {
    if (h.log) h.log(m);
}

void check_cancel(const OciInstallOptions& o) {
    if (o.hooks.cancel && o.hooks.cancel->load()) throw_errno(ECANCELED, "transfer cancelled");
}

std::vector<std::string> dir_names(int fd) {
    std::unique_ptr<DIR, int (*)(DIR*)> d(open_dir_stream(fd), closedir);
    std::vector<std::string> out;
    while (dirent* e = readdir(d.get())) {
        std::string_view n = e->d_name;
        if (n == "." || n == "..") continue;
        out.emplace_back(n);
    }
    return out;
}

UniqueFd open_subdir(int parent, const std::string& name) {
    UniqueFd fd(openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open directory '" + name + "' of a layer");
    return fd;
}

void strip_overlay_xattrs(int fd) {
    char names[65536];
    ssize_t n = flistxattr(fd, names, sizeof names);
    if (n <= 0) return;
    for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(strlen(names + i)) + 1)
        if (std::string_view(names + i).starts_with("user.overlay.") ||
            std::string_view(names + i).starts_with("trusted.overlay."))
            fremovexattr(fd, names + i);
}

bool is_whiteout(const struct stat& st) { return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0); }

bool is_opaque(int dir_fd) {
    char v[4];
    ssize_t n = fgetxattr(dir_fd, kOpaqueXattr, v, sizeof v);
    return n == 1 && v[0] == 'y';
}

// Metadata of `from` onto the fd `to` (not for symlinks): owner, mode, xattrs but overlay's, times.
void copy_meta_fd(int from, int to, const struct stat& st) {
    char names[65536];
    ssize_t n = flistxattr(from, names, sizeof names);
    for (ssize_t i = 0; n > 0 && i < n; i += static_cast<ssize_t>(strlen(names + i)) + 1) {
        std::string_view nm = names + i;
        if (nm.starts_with("user.overlay.") || nm.starts_with("trusted.overlay.")) continue;
        std::string val(65536, '\0');
        ssize_t s = fgetxattr(from, names + i, val.data(), val.size());
        if (s >= 0) fsetxattr(to, names + i, val.data(), static_cast<size_t>(s), 0);
    }
    if (fchown(to, st.st_uid, st.st_gid) < 0) throw_last_error("cannot set the owner of a flattened file");
    if (fchmod(to, st.st_mode & 07777) < 0) throw_last_error("cannot set the mode of a flattened file");
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    futimens(to, ts);
}

void clear_dir(int fd) {
    for (const auto& n : dir_names(fd)) remove_tree_at(fd, n);
}

void merge_dir(int src, int dst, unsigned depth) {
    if (depth > 512) throw_errno(ELOOP, "layer tree too deep to flatten");
    for (const auto& name : dir_names(src)) {
        struct stat st;
        if (fstatat(src, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) throw_last_error("cannot stat a layer entry");
        struct stat dst_st;
        bool exists = fstatat(dst, name.c_str(), &dst_st, AT_SYMLINK_NOFOLLOW) == 0;
        if (is_whiteout(st)) {
            if (exists) remove_tree_at(dst, name);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            UniqueFd s = open_subdir(src, name);
            if (exists && !S_ISDIR(dst_st.st_mode)) {
                remove_tree_at(dst, name);
                exists = false;
            }
            if (!exists && mkdirat(dst, name.c_str(), 0700) < 0) throw_last_error("cannot create directory " + name);
            UniqueFd d = open_subdir(dst, name);
            if (exists && is_opaque(s.get())) clear_dir(d.get());
            merge_dir(s.get(), d.get(), depth + 1);
            copy_meta_fd(s.get(), d.get(), st);
            continue;
        }
        if (exists) remove_tree_at(dst, name);
        if (S_ISREG(st.st_mode)) {
            UniqueFd s(openat(src, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!s) throw_last_error("cannot open layer file " + name);
            UniqueFd d(openat(dst, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!d) throw_last_error("cannot create " + name);
            copy_file_data(s.get(), d.get(), st.st_size);
            copy_meta_fd(s.get(), d.get(), st);
        } else if (S_ISLNK(st.st_mode)) {
            std::string target(PATH_MAX, '\0');
            ssize_t n = readlinkat(src, name.c_str(), target.data(), target.size());
            if (n < 0) throw_last_error("cannot read symlink " + name);
            target.resize(static_cast<size_t>(n));
            if (symlinkat(target.c_str(), dst, name.c_str()) < 0) throw_last_error("cannot create symlink " + name);
            if (fchownat(dst, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                throw_last_error("cannot set the owner of symlink " + name);
            struct timespec ts[2] = {st.st_atim, st.st_mtim};
            utimensat(dst, name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
        } else if (S_ISFIFO(st.st_mode)) {
            if (mkfifoat(dst, name.c_str(), 0600) < 0) throw_last_error("cannot create FIFO " + name);
            UniqueFd d(openat(dst, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
            if (d) {
                if (fchownat(dst, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                    throw_last_error("cannot set the owner of " + name);
                fchmodat(dst, name.c_str(), st.st_mode & 07777, 0);
            }
        }
        // Sockets and device nodes never come out of the extractor.
    }
}

// Hashes and counts the compressed bytes of a blob; at its end, checks size and digest.
class VerifyingSource final : public ByteSource {
public:
    VerifyingSource(ByteSource& inner, const OciDescriptor& d, std::function<void(uint64_t)> on_bytes)
        : inner_(inner), d_(d), on_bytes_(std::move(on_bytes)) {}
    size_t read(void* buf, size_t n) override {
        size_t r = inner_.read(buf, n);
        if (r == 0) {
            if (!checked_) {
                checked_ = true;
                if (got_ != d_.size)
                    throw_errno(EBADMSG, "layer " + d_.digest + " has " + std::to_string(got_) +
                                             " bytes, the manifest says " + std::to_string(d_.size));
                if ("sha256:" + h_.hex() != d_.digest) throw_errno(EBADMSG, "digest mismatch for layer " + d_.digest);
            }
            return 0;
        }
        got_ += r;
        if (got_ > d_.size) throw_errno(EBADMSG, "layer " + d_.digest + " is larger than the manifest says");
        h_.update(buf, r);
        if (on_bytes_) on_bytes_(r);
        return r;
    }
    void drain() {
        char b[65536];
        while (read(b, sizeof b) > 0) {
        }
    }

private:
    ByteSource& inner_;
    const OciDescriptor& d_;
    std::function<void(uint64_t)> on_bytes_;
    Sha256 h_;
    uint64_t got_ = 0;
    bool checked_ = false;
};

// A registry blob as a ByteSource: curl writes into a pipe on a thread of its own, the extractor
// reads the other end. Closing the read end (extractor failed) makes the writer fail with EPIPE.
class RegistryBlobSource final : public ByteSource {
public:
    RegistryBlobSource(OciRegistryClient& client, const OciDescriptor& d) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) throw_last_error("pipe2");
        rd_.reset(p[0]);
        auto wr = std::make_shared<UniqueFd>(p[1]);
        thread_ = std::thread([this, &client, d, wr] {
            try {
                FdSink sink(wr->get());
                client.stream_blob(d, sink);
            } catch (...) {
                err_ = std::current_exception();
            }
            wr->reset();
        });
    }
    ~RegistryBlobSource() override {
        rd_.reset();
        if (thread_.joinable()) thread_.join();
    }
    size_t read(void* buf, size_t n) override {
        FdSource s(rd_.get());
        return s.read(buf, n);
    }
    // Stops reading, waits for the download and rethrows its error, if any.
    void finish() {
        rd_.reset();
        if (thread_.joinable()) thread_.join();
        if (err_) std::rethrow_exception(err_);
    }

private:
    UniqueFd rd_;
    std::thread thread_;
    std::exception_ptr err_;
};

// Byte progress across all layers, from several threads: percent and importd's status line
// ("Got 40% of REF. 3s left at 1.2M/s.") at most once a second.
class StackProgress {
public:
    StackProgress(const TransferHooks& h, std::string what, uint64_t total)
        : h_(h), what_(std::move(what)), total_(total), start_(std::chrono::steady_clock::now()), last_line_(start_) {}
    void add(uint64_t n) {
        uint64_t done = done_.fetch_add(n) + n;
        if (total_ == 0) return;
        unsigned p = static_cast<unsigned>(std::min(done, total_) * 100 / total_);
        std::lock_guard lk(m_);
        if (h_.progress && p != last_percent_) {
            last_percent_ = p;
            h_.progress(p);
        }
        auto now = std::chrono::steady_clock::now();
        if (now - last_line_ < std::chrono::seconds(1)) return;
        last_line_ = now;
        double el = std::chrono::duration<double>(now - start_).count();
        if (el <= 0) return;
        double rate = static_cast<double>(done) / el;
        uint64_t left =
            rate > 0 ? static_cast<uint64_t>(static_cast<double>(total_ - std::min(done, total_)) / rate * 1e6) : 0;
        log(h_, "Got " + std::to_string(p) + "% of " + what_ + ". " + format_timespan(left) + " left at " +
                    format_bytes(static_cast<uint64_t>(rate)) + "/s.");
    }

private:
    const TransferHooks& h_;
    std::string what_;
    uint64_t total_;
    std::atomic<uint64_t> done_{0};
    std::mutex m_;
    unsigned last_percent_ = ~0u;
    std::chrono::steady_clock::time_point start_, last_line_{};
};

// The transfer's stake in the pool's shared layers. Taken before it looks for layers to reuse,
// it holds the layer lock shared until the image is installed, so no cleanup removes a layer it
// counts on (ImagePool::lock_oci_layers). Unless committed (the image was installed), the layers
// it added are removed again, those of them that no stack links by then: a failed transfer leaves
// the pool as it found it, and a layer another transfer has linked meanwhile stays. While another
// transfer runs (it may be about to link one) they stay for the next cleanup (CleanPool).
class NewLayers {
public:
    explicit NewLayers(ImagePool& pool) : pool_(pool), lock_(pool.lock_oci_layers(false, true)) {}
    ~NewLayers() {
        if (committed_) return;
        lock_.reset();
        try {
            pool_.remove_unused_oci_layers(false, &names_);
        } catch (...) {
            // Hidden entries; better a leftover layer than an exception from a destructor.
        }
    }
    void add(std::string n) {
        std::lock_guard lk(m_);
        names_.push_back(std::move(n));
    }
    void commit() { committed_ = true; }

private:
    ImagePool& pool_;
    UniqueFd lock_;
    std::mutex m_;
    std::vector<std::string> names_;
    bool committed_ = false;
};

bool layer_present(ImagePool& pool, const std::string& digest) {
    struct stat st;
    return fstatat(pool.fd(), oci_layer_dir_name(digest).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

// Unpacks one layer blob into .oci-sha256-<hex>, verified; a concurrent transfer that got there
// first wins (its copy is identical by digest).
void unpack_layer(ImagePool& pool, ByteSource& blob, const OciDescriptor& d, StackProgress& prog, const OciInstallOptions& o,
                  NewLayers& created) {
    auto tmp = pool.make_temp("pull-oci-layer-", true);
    if (fchmod(tmp.fd(), 0755) < 0) throw_last_error("cannot set the mode of a layer directory");
    auto ver = std::make_unique<VerifyingSource>(blob, d, [&](uint64_t n) {
        check_cancel(o);
        prog.add(n);
    });
    VerifyingSource* raw = ver.get();
    struct Own final : ByteSource {
        explicit Own(VerifyingSource* v) : v_(v) {}
        size_t read(void* b, size_t n) override { return v_->read(b, n); }
        VerifyingSource* v_;
    };
    Compression c;
    DecompressOptions dopt;
    dopt.threads = 1;
    auto dec = make_auto_decompressor(std::make_unique<Own>(raw), &c, dopt);
    if (c != Compression::none && c != Compression::gzip && c != Compression::zstd)
        throw UsageError("layer " + d.digest + " is " + std::string(to_string(c)) +
                         "-compressed; OCI layers are tar, "
                         "tar+gzip or tar+zstd");
    ExtractOptions eo;
    eo.warn = [&](const std::string& m) { log(o.hooks, "Layer " + d.digest.substr(7, 12) + ": " + m); };
    try {
        extract_tar(*dec, tmp.fd(), eo);
    } catch (const std::system_error& e) {
        // A damaged blob shows up first as a decoder or tar error; its digest names the cause.
        if (e.code().value() == EBADMSG || e.code().value() == EINVAL) raw->drain();
        std::string m = e.what(), suffix = ": " + e.code().message();
        if (m.ends_with(suffix)) m.resize(m.size() - suffix.size());
        throw std::system_error(e.code(), "layer " + d.digest + ": " + m);
    }
    raw->drain();
    oci_convert_whiteouts(tmp.fd());
    store_layer_usage(tmp.fd());  // the layer is final now: listings read its usage from here on
    if (fsync(tmp.fd()) < 0) {
    }
    std::string final_name = oci_layer_dir_name(d.digest);
    if (renameat2(pool.fd(), tmp.name().c_str(), pool.fd(), final_name.c_str(), RENAME_NOREPLACE) == 0)
        created.add(final_name);
    else if (errno != EEXIST) throw_last_error("cannot move layer " + d.digest + " into place");
    // On success the temporary name is gone and ~Temp finds nothing; on EEXIST it removes ours.
}

// Fetches/unpacks `layers` with up to o.parallel workers; the first error stops the others.
void unpack_layers(ImagePool& pool, const std::vector<OciDescriptor>& layers,
                   const std::function<void(const OciDescriptor&, const std::atomic<bool>& abort, StackProgress&)>& one,
                   StackProgress& prog, const OciInstallOptions& o) {
    std::atomic<size_t> next{0};
    std::atomic<bool> abort{false};
    std::mutex m;
    std::exception_ptr first;
    unsigned n = std::clamp(o.parallel, 1u, 8u);
    n = std::min<unsigned>(n, static_cast<unsigned>(layers.size()));
    auto worker = [&] {
        while (!abort) {
            size_t i = next++;
            if (i >= layers.size()) return;
            try {
                if (!layer_present(pool, layers[i].digest)) one(layers[i], abort, prog);
            } catch (...) {
                std::lock_guard lk(m);
                // The first failure is the cause; the others are its echoes (stopped downloads).
                if (!first) first = std::current_exception();
                abort = true;
            }
        }
    };
    std::vector<std::thread> ts;
    for (unsigned i = 1; i < n; i++) ts.emplace_back(worker);
    worker();
    for (auto& t : ts) t.join();
    if (first) std::rethrow_exception(first);
}

std::vector<OciDescriptor> unique_missing(ImagePool& pool, const std::vector<OciDescriptor>& layers, uint64_t* total) {
    std::vector<OciDescriptor> out;
    *total = 0;
    for (const auto& l : layers) {
        if (layer_present(pool, l.digest)) continue;
        if (std::any_of(out.begin(), out.end(), [&](const OciDescriptor& x) { return x.digest == l.digest; })) continue;
        out.push_back(l);
        *total += l.size;
    }
    return out;
}

void check_name_free(ImagePool& pool, const std::string& name, const OciInstallOptions& o) {
    if (!image_name_is_valid(name) || name.ends_with(".mstack")) throw UsageError("invalid image name '" + name + "'");
    if (o.force) return;
    pool.check_free(name);
    struct stat st;
    if (fstatat(pool.fd(), (name + ".mstack").c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
        throw_errno(EEXIST, "image '" + name + "' already exists (use --force to replace it)");
}

void write_pool_file(ImagePool& pool, const std::string& final_name, std::string_view data) {
    auto t = pool.make_temp("pull-oci-", false);
    FdSink s(t.fd());
    s.write(data.data(), data.size());
    if (fchmod(t.fd(), 0644) < 0) throw_last_error("cannot set the mode of " + final_name);
    if (renameat(pool.fd(), t.name().c_str(), pool.fd(), final_name.c_str()) < 0)
        throw_last_error("cannot write " + final_name + " into the pool");
}

// The image from its verified layers: a stack or a flattened tree, plus config and settings.
void install_image(ImagePool& pool, const std::string& name, const OciManifest& m, const std::string& config,
                   const OciInstallOptions& o) {
    OciImageConfig cfg = parse_oci_image_config(config);
    if (!cfg.ignored.empty()) {
        std::string l;
        for (const auto& k : cfg.ignored) l += (l.empty() ? "" : ", ") + k;
        log(o.hooks, "Ignoring image config fields with no .nspawn equivalent: " + l + ".");
    }
    check_cancel(o);
    std::string settings = oci_nspawn_settings(cfg);
    std::unique_ptr<ImagePool::Temp> tmp;
    tmp = std::make_unique<ImagePool::Temp>(pool.make_temp("pull-oci-", true));
    if (fchmod(tmp->fd(), 0755) < 0) throw_last_error("cannot set the mode of the image directory");
    if (o.flatten) {
        std::vector<UniqueFd> fds;
        std::vector<int> raw;
        for (const auto& l : m.layers) {
            fds.push_back(open_subdir(pool.fd(), oci_layer_dir_name(l.digest)));
            raw.push_back(fds.back().get());
        }
        oci_flatten_layers(raw, tmp->fd());
    } else {
        for (size_t i = 0; i < m.layers.size(); i++) {
            std::string target = "../" + oci_layer_dir_name(m.layers[i].digest);
            std::string link = "layer@" + std::to_string(i);
            if (symlinkat(target.c_str(), tmp->fd(), link.c_str()) < 0) throw_last_error("cannot create " + link);
        }
        if (mkdirat(tmp->fd(), "rw", 0755) < 0) throw_last_error("cannot create the writable layer");
    }
    check_cancel(o);
    write_pool_file(pool, name + ".oci-config", config);
    write_pool_file(pool, name + ".nspawn", settings);
    try {
        if (o.flatten) tmp->install(name, o.force, o.read_only);
        else tmp->install(name + ".mstack", o.force, false);
    } catch (...) {
        unlinkat(pool.fd(), (name + ".oci-config").c_str(), 0);
        unlinkat(pool.fd(), (name + ".nspawn").c_str(), 0);
        throw;
    }
    // The other form of the same name (a stack replacing a flattened tree or vice versa).
    if (o.force) remove_tree_at(pool.fd(), o.flatten ? name + ".mstack" : name);
}

std::string describe_layers(const OciManifest& m) {
    uint64_t sum = 0;
    for (const auto& l : m.layers) sum += l.size;
    return std::to_string(m.layers.size()) + " layer" + (m.layers.size() == 1 ? "" : "s") + ", " + format_bytes(sum);
}

void check_platform(const OciImageConfig& c, const OciInstallOptions& o, const std::string& arch) {
    if ((!c.architecture.empty() && c.architecture != arch) || (!c.os.empty() && c.os != o.os))
        throw_errno(ENOEXEC, "the image is for " + c.os + "/" + c.architecture + ", not " + o.os + "/" + arch +
                                 " (pick another tag or platform)");
}

// ---- local OCI layout ----

std::string read_layout_file(int dir_fd, const std::string& path, size_t max) {
    auto s = read_file_in_root(dir_fd, path, max);
    if (!s) throw UsageError("not an OCI image layout: " + path + " is missing");
    return *s;
}

std::string read_layout_blob(int dir_fd, const OciDescriptor& d) {
    if (d.size > kOciManifestMax) throw UsageError("blob " + d.digest + " is larger than 4 MiB");
    std::string b = read_layout_file(dir_fd, "blobs/sha256/" + std::string(oci_digest_hex(d.digest)), kOciManifestMax);
    if (b.size() != d.size || "sha256:" + sha256_hex(b) != d.digest)
        throw_errno(EBADMSG, "digest mismatch for blob " + d.digest + " in the image layout");
    return b;
}

void import_layout(ImagePool& pool, int dir_fd, const std::string& name, const OciInstallOptions& o) {
    std::string arch = o.arch.empty() ? std::string(oci_host_architecture()) : o.arch;
    std::string layout = read_layout_file(dir_fd, "oci-layout", 4096);
    if (layout.find("imageLayoutVersion") == std::string::npos)
        throw UsageError("not an OCI image layout: oci-layout has no imageLayoutVersion");
    std::string idx = read_layout_file(dir_fd, "index.json", kOciManifestMax);
    OciDescriptor chosen;
    for (int depth = 0;; depth++) {
        if (depth > 2) throw UsageError("image layout: indexes nested too deeply");
        auto entries = parse_oci_index(idx);
        if (entries.empty()) throw UsageError("image layout: the index lists no image");
        std::string avail;
        std::optional<OciDescriptor> pick;
        if (entries.size() == 1) pick = entries[0];
        else pick = oci_choose_platform(entries, arch, o.os, &avail);
        if (!pick)
            throw_errno(ENOEXEC, "the image layout has no image for " + o.os + "/" + arch + " (available: " + avail + ")");
        std::string body = read_layout_blob(dir_fd, *pick);
        if (oci_doc_kind(pick->media_type, body) == OciDocKind::manifest) {
            chosen = *pick;
            idx = body;
            break;
        }
        idx = body;
    }
    OciManifest m = parse_oci_manifest(idx);
    std::string config = read_layout_blob(dir_fd, m.config);
    check_platform(parse_oci_image_config(config), o, arch);
    log(o.hooks, "Importing " + chosen.digest + " (" + describe_layers(m) + ").");
    NewLayers created(pool);  // before looking for layers to share
    uint64_t total;
    auto missing = unique_missing(pool, m.layers, &total);
    StackProgress prog(o.hooks, "image layout", total);
    unpack_layers(
        pool, missing,
        [&](const OciDescriptor& d, const std::atomic<bool>&, StackProgress& p) {
            UniqueFd f = open_in_root(dir_fd, "blobs/sha256/" + std::string(oci_digest_hex(d.digest)),
                                      O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
            if (!f) throw_last_error("image layout: cannot open layer blob " + d.digest);
            struct stat st;
            if (fstat(f.get(), &st) < 0 || !S_ISREG(st.st_mode))
                throw UsageError("image layout: layer blob " + d.digest + " is not a file");
            FdSource src(f.get());
            unpack_layer(pool, src, d, p, o, created);
        },
        prog, o);
    install_image(pool, name, m, config, o);
    created.commit();
    log(o.hooks, std::string("Imported image '") + name + "'" + (o.flatten ? " (flattened)." : " as a layer stack."));
}

}  // namespace

std::string oci_layer_dir_name(std::string_view digest) { return ".oci-sha256-" + std::string(oci_digest_hex(digest)); }

void oci_convert_whiteouts(int layer_fd) {
    std::vector<UniqueFd> stack;
    stack.emplace_back(fcntl(layer_fd, F_DUPFD_CLOEXEC, 3));
    if (!stack.back()) throw_last_error("cannot duplicate the layer fd");
    while (!stack.empty()) {
        UniqueFd dir = std::move(stack.back());
        stack.pop_back();
        strip_overlay_xattrs(dir.get());
        auto names = dir_names(dir.get());
        std::sort(names.begin(), names.end());
        for (const auto& n : names) {
            std::string_view nv = n;
            if (nv.starts_with(kWhiteoutPrefix)) {
                if (nv == kOpaqueMarker) {
                    if (fsetxattr(dir.get(), kOpaqueXattr, "y", 1, 0) < 0)
                        throw_last_error("cannot mark an opaque directory (does the pool's file system take user xattrs?)");
                } else if (!nv.starts_with(".wh..wh.")) {
                    std::string target(nv.substr(kWhiteoutPrefix.size()));
                    if (target.empty() || target == "." || target == ".." || target.find('/') != std::string::npos)
                        throw_errno(EINVAL, "whiteout '" + n + "' points outside its directory");
                    if (unlinkat(dir.get(), n.c_str(), 0) < 0) {
                        if (errno != EISDIR) throw_last_error("cannot remove " + n);
                        remove_tree_at(dir.get(), n);  // a directory named like a whiteout
                    }
                    // A whiteout only hides lower layers: a same-named entry of this layer stays.
                    if (mknodat(dir.get(), target.c_str(), S_IFCHR | 0, makedev(0, 0)) < 0 && errno != EEXIST)
                        throw_last_error("cannot create the whiteout for " + target);
                    continue;
                }
                remove_tree_at(dir.get(), n);
                continue;
            }
            struct stat st;
            if (fstatat(dir.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
                stack.push_back(open_subdir(dir.get(), n));
        }
    }
}

void oci_flatten_layers(const std::vector<int>& layer_fds, int dest_fd) {
    for (size_t i = 0; i < layer_fds.size(); i++) {
        merge_dir(layer_fds[i], dest_fd, 0);
        struct stat st;
        if (fstat(layer_fds[i], &st) == 0) copy_meta_fd(layer_fds[i], dest_fd, st);
    }
    // The layers' stored usage (ImagePool's bookkeeping, on their roots) is not the tree's.
    (void)fremovexattr(dest_fd, kLayerUsageXattr);
}

void pull_oci(ImagePool& pool, const std::string& ref_str, const std::string& name, const OciInstallOptions& o) {
    OciReference ref = parse_oci_reference(ref_str, o.registries);
    check_name_free(pool, name, o);
    std::string arch = o.arch.empty() ? std::string(oci_host_architecture()) : o.arch;
    OciRegistry reg = o.registries.lookup(ref.registry);
    OciFetchOptions fo = o.fetch;
    fo.cancel = o.hooks.cancel;
    OciRegistryClient client(reg, ref.repository, fo);
    log(o.hooks, "Pulling " + ref.str() + " from " + client.base_url() + ".");
    std::string ctype;
    std::string body = client.get_manifest(ref.manifest_ref(), &ctype);
    if (!ref.digest.empty() && "sha256:" + sha256_hex(body) != ref.digest)
        throw_errno(EBADMSG, "digest mismatch for manifest " + ref.digest);
    if (oci_doc_kind(ctype, body) == OciDocKind::index) {
        std::string avail;
        auto pick = oci_choose_platform(parse_oci_index(body), arch, o.os, &avail);
        if (!pick)
            throw_errno(ENOEXEC, ref.str() + " has no image for " + o.os + "/" + arch + " (available: " + avail + ")");
        body = client.get_manifest(pick->digest, &ctype);
        if ("sha256:" + sha256_hex(body) != pick->digest)
            throw_errno(EBADMSG, "digest mismatch for manifest " + pick->digest);
        if (oci_doc_kind(ctype, body) != OciDocKind::manifest)
            throw UsageError("the index entry " + pick->digest + " is not an image manifest");
    }
    OciManifest m = parse_oci_manifest(body);
    std::string config = client.get_small_blob(m.config);
    check_platform(parse_oci_image_config(config), o, arch);
    log(o.hooks, "Image " + ref.str() + ": " + describe_layers(m) + ".");
    NewLayers created(pool);  // before looking for layers to share
    uint64_t total;
    auto missing = unique_missing(pool, m.layers, &total);
    if (missing.size() < m.layers.size())
        log(o.hooks, std::to_string(m.layers.size() - missing.size()) + " layer(s) already in the pool, shared.");
    StackProgress prog(o.hooks, ref.str(), total);
    unpack_layers(
        pool, missing,
        [&](const OciDescriptor& d, const std::atomic<bool>& abort, StackProgress& p) {
            OciFetchOptions lfo = fo;
            lfo.abort = &abort;
            OciRegistryClient lc(reg, ref.repository, lfo);
            lc.set_token(client.token());
            RegistryBlobSource src(lc, d);
            try {
                unpack_layer(pool, src, d, p, o, created);
            } catch (...) {
                // The download's own error (404, stall, 401) explains more than the truncated
                // stream the extractor saw.
                src.finish();
                throw;
            }
            src.finish();
        },
        prog, o);
    install_image(pool, name, m, config, o);
    created.commit();
    log(o.hooks, "Pulled " + ref.str() + " as image '" + name + "'" + (o.flatten ? " (flattened)." : " (layer stack)."));
}

void import_oci(ImagePool& pool, int src_fd, const std::string& name, const OciInstallOptions& o) {
    check_name_free(pool, name, o);
    struct stat st;
    if (fstat(src_fd, &st) < 0) throw_last_error("cannot stat the input");
    if (S_ISDIR(st.st_mode)) {
        import_layout(pool, src_fd, name, o);
        return;
    }
    if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
        throw UsageError("the input must be an OCI layout directory or an oci-archive file");
    // An oci-archive is a layout in a tar: unpack it (safely) next to the pool's images, then
    // import from there. Layers stay compressed in it, so this costs their size once more.
    auto tmp = pool.make_temp("import-oci-", true);
    ExtractOptions eo;
    eo.warn = [&](const std::string& m) { log(o.hooks, m); };
    Compression c;
    auto dec = make_auto_decompressor(std::make_unique<FdSource>(src_fd), &c);
    extract_tar(*dec, tmp.fd(), eo);
    import_layout(pool, tmp.fd(), name, o);
}

}  // namespace mk::core
