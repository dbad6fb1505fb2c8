#include "bus/import_objects.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bus/credentials.hpp"
#include "bus/errors.hpp"
#include "bus/polkit.hpp"
#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/names.hpp"
#include "core/kernel/capabilities.hpp"

namespace mk::bus {
namespace {

std::string transfer_object_path(uint32_t id) {
    return std::string(kImportManagerPath) + "/transfer/_" + std::to_string(id);
}

void check_name(const std::string& local) {
    // machd-transfer takes no "--": a leading '-' would read as an option.
    if (!core::image_name_is_valid(local) || local[0] == '-')
        throw bus_error(kInvalidArgs, "Local name " + local + " is invalid");
}

// LOG payloads are escaped by machd-transfer (\xNN); priority as importd: LOG_INFO.
constexpr uint32_t kLogInfo = 6;
constexpr uint32_t kLogErr = 3;

}  // namespace

ScopePropertyList transfer_unit_properties(const std::string& verb, const std::string& pool) {
    using core::cap_bit;
    using Names = sdbus::Struct<bool, std::vector<std::string>>;
    bool pull = verb.starts_with("pull-");
    bool devices = verb == "import-fs";
    // machd-transfer's own set (it drops to it with CAP_SETPCAP, then installs its seccomp filter).
    uint64_t caps = cap_bit(CAP_CHOWN) | cap_bit(CAP_FOWNER) | cap_bit(CAP_FSETID) | cap_bit(CAP_DAC_OVERRIDE) |
                    cap_bit(CAP_DAC_READ_SEARCH) | cap_bit(CAP_SETFCAP) | cap_bit(CAP_LINUX_IMMUTABLE) |
                    cap_bit(CAP_SETPCAP) | (devices ? cap_bit(CAP_MKNOD) : 0);
    ScopePropertyList p;
    auto set = [&](const char* name, auto value) { p.emplace_back(name, sdbus::Variant(value)); };
    set("Description", "machkit image transfer (" + verb + ")");
    set("NoNewPrivileges", true);
    set("ProtectSystem", std::string("strict"));
    set("ReadWritePaths", std::vector<std::string>{pool});
    set("ProtectHome", std::string("yes"));
    set("PrivateTmp", true);
    // import-fs recreates the tree's device nodes (never opens them); the others make none.
    set("PrivateDevices", !devices);
    set("PrivateNetwork", !pull);
    set("RestrictAddressFamilies", Names{true, pull ? std::vector<std::string>{"AF_UNIX", "AF_INET", "AF_INET6"}
                                                    : std::vector<std::string>{"AF_UNIX"}});
    set("CapabilityBoundingSet", caps);
    for (const char* b :
         {"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
          "ProtectHostname", "LockPersonality", "MemoryDenyWriteExecute", "RestrictRealtime"})
        set(b, true);
    set("RestrictNamespaces", uint64_t{0});  // the namespaces allowed: none
    set("SystemCallArchitectures", std::vector<std::string>{"native"});
    // seccomp(2) for the helper's own, narrower filter on top.
    set("SystemCallFilter", Names{true, {"@system-service", "seccomp"}});
    set("SystemCallErrorNumber", int32_t{EPERM});
    set("UMask", uint32_t{022});
    return p;
}

// ------------------------------------------------------------------------------------------ Transfer

TransferObject::TransferObject(sdbus::IConnection& connection, ImportManagerObject& manager, uint32_t id, std::string type,
                               std::string local, std::string remote, std::string verify)
    : AdaptorInterfaces(connection, transfer_object_path(id)),
      id_(id),
      type_(std::move(type)),
      local_(std::move(local)),
      remote_(std::move(remote)),
      verify_(std::move(verify)),
      manager_(manager) {
    registerAdaptor();
}

TransferObject::~TransferObject() { unregisterAdaptor(); }

std::string TransferObject::path() const { return transfer_object_path(id_); }

void TransferObject::cancel() {
    if (canceled_) return;
    if (!unit_.empty()) {
        canceled_ = true;
        manager_.units_.stop(unit_);  // SIGTERM, as below
    } else if (pid_ > 0) {
        canceled_ = true;
        ::kill(pid_, SIGTERM);
    }
}

void TransferObject::Cancel() {
    require_action(getObject(), kPolkitPull, "cancelling transfers");
    cancel();
}

// ------------------------------------------------------------------------------------------- Manager

ImportManagerObject::ImportManagerObject(sdbus::IConnection& connection, EventLoop& loop, std::string transfer_path,
                                         std::string pool)
    : AdaptorInterfaces(connection, kImportManagerPath),
      connection_(connection),
      loop_(loop),
      transfer_path_(std::move(transfer_path)),
      pool_(std::move(pool)) {
    registerAdaptor();
}

ImportManagerObject::~ImportManagerObject() {
    // machd is stopping: cancel what runs (the helpers clean up their temporaries themselves).
    for (auto& [id, t] : transfers_) {
        loop_.unwatch_fd(t->progress_fd_.get());
        t->cancel();
    }
    transfers_.clear();
    unregisterAdaptor();
}

ImportManagerObject::Reply ImportManagerObject::start(const std::string& type, const std::string& local,
                                                      const std::string& remote, const std::string& verify, int client_fd,
                                                      bool client_is_stdout, std::vector<std::string> args) {
    const char* action = type.starts_with("import")   ? kPolkitImport
                         : type.starts_with("export") ? kPolkitExport
                                                      : kPolkitPull;
    require_action(getObject(), action, "starting transfers");
    check_name(local);
    for (auto& [id, t] : transfers_)
        if (t->local_ == local) throw bus_error(kTransferInProgress, "Transfer for " + local + " already in progress.");
    if (transfers_.size() >= kTransfersMax) throw sdbus::Error(kLimitsExceeded, "Too many transfers in progress");

    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0) throw bus_error(kFailed, std::string("pipe: ") + std::strerror(errno));
    core::UniqueFd rd(pipefd[0]), wr(pipefd[1]);

    std::vector<std::string> argv{transfer_path_};
    argv.insert(argv.end(), args.begin(), args.end());
    if (units_.start)
        return start_unit(type, local, remote, verify, client_fd, client_is_stdout, std::move(argv), std::move(rd),
                          std::move(wr));
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);

    pid_t pid = ::fork();
    if (pid < 0) throw bus_error(kFailed, std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        // Child: fd 3 = progress pipe; client fd as stdin (import) or stdout (export).
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, nullptr);
        int p = ::fcntl(wr.get(), F_DUPFD, 10);
        int c = client_fd >= 0 ? ::fcntl(client_fd, F_DUPFD, 10) : -1;
        if (p < 0 || (client_fd >= 0 && c < 0)) _exit(127);
        if (::dup2(p, 3) < 0) _exit(127);
        if (c >= 0) {
            if (::dup2(c, client_is_stdout ? 1 : 0) < 0) _exit(127);
        } else {
            int null = ::open("/dev/null", O_RDWR);
            if (null >= 0) ::dup2(null, 0);
        }
        ::syscall(SYS_close_range, 4u, ~0u, 0u);
        ::execv(transfer_path_.c_str(), cargv.data());
        std::fprintf(stderr, "machd: exec %s: %s\n", transfer_path_.c_str(), std::strerror(errno));
        _exit(127);
    }
    wr.reset();
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        throw bus_error(kFailed, std::string("pidfd_open: ") + std::strerror(errno));
    }
    ::fcntl(rd.get(), F_SETFL, O_NONBLOCK);

    uint32_t id = next_id_++;
    auto t = std::make_unique<TransferObject>(connection_, *this, id, type, local, remote, verify);
    t->pid_ = pid;
    t->pidfd_ = core::UniqueFd(pidfd);
    t->progress_fd_ = std::move(rd);
    TransferObject* tp = t.get();
    transfers_[id] = std::move(t);
    loop_.watch_fd(tp->progress_fd_.get(), [this, tp] { read_progress(*tp); });
    loop_.watch_child(pidfd, [this, id] { finished(id); });
    return announce(*tp, client_is_stdout);
}

// The helper as machd-transfer-<id>.service: its progress on stderr (the pipe), the client's fd as
// stdin or stdout. Not machd's child: the end is the pipe's EOF, when systemd, after the helper's
// exit, closes its copy of the descriptors.
ImportManagerObject::Reply ImportManagerObject::start_unit(const std::string& type, const std::string& local,
                                                           const std::string& remote, const std::string& verify,
                                                           int client_fd, bool client_is_stdout,
                                                           std::vector<std::string> argv, core::UniqueFd rd,
                                                           core::UniqueFd wr) {
    for (auto& a : argv)
        if (a == "--progress-fd=3") a = "--progress-fd=2";
    uint32_t id = next_id_;
    std::string unit = "machd-transfer-" + std::to_string(id) + ".service";
    units_.start(unit, argv, client_is_stdout ? -1 : client_fd, client_is_stdout ? client_fd : -1, wr.get(),
                 transfer_unit_properties(type, pool_));
    next_id_++;
    wr.reset();
    ::fcntl(rd.get(), F_SETFL, O_NONBLOCK);
    auto t = std::make_unique<TransferObject>(connection_, *this, id, type, local, remote, verify);
    t->unit_ = unit;
    t->progress_fd_ = std::move(rd);
    TransferObject* tp = t.get();
    transfers_[id] = std::move(t);
    loop_.watch_fd(tp->progress_fd_.get(), [this, tp, id] {
        if (read_progress(*tp)) finished(id);
    });
    return announce(*tp, client_is_stdout);
}

ImportManagerObject::Reply ImportManagerObject::announce(TransferObject& t, bool client_is_stdout) {
    sdbus::ObjectPath path(t.path());
    emitTransferNew(t.id_, path);
    // Direction as the data flows: exports go from the image to the caller's descriptor.
    const std::string other = !t.remote_.empty() ? t.remote_ : "the caller's file descriptor";
    const std::string& from = client_is_stdout ? t.local_ : other;
    const std::string& to = client_is_stdout ? other : t.local_;
    std::fprintf(stderr, "machd: transfer %u: %s %s -> %s started%s%s\n", t.id_, t.type_.c_str(), from.c_str(), to.c_str(),
                 t.unit_.empty() ? "" : " as ", t.unit_.c_str());
    return {t.id_, path};
}

bool ImportManagerObject::read_progress(TransferObject& t) {
    char buf[4096];
    bool eof = false;
    for (;;) {
        ssize_t n = core::retry_eintr([&] { return ::read(t.progress_fd_.get(), buf, sizeof buf); });
        if (n <= 0) {
            if (n == 0) {
                loop_.unwatch_fd(t.progress_fd_.get());
                eof = true;
            }
            break;
        }
        t.buffer_.append(buf, static_cast<size_t>(n));
    }
    size_t nl;
    while ((nl = t.buffer_.find('\n')) != std::string::npos) {
        std::string line = t.buffer_.substr(0, nl);
        t.buffer_.erase(0, nl + 1);
        if (line.rfind("PROGRESS ", 0) == 0) {
            double pct = std::strtod(line.c_str() + 9, nullptr);
            if (pct >= 0 && pct <= 100) t.progress_ = pct / 100.0;
        } else if (line.rfind("LOG ", 0) == 0) {
            t.emitLogMessage(kLogInfo, line.substr(4));
        } else if (line == "DONE") {
            t.done_ = true;
        } else if (line.rfind("ERROR ", 0) == 0) {
            auto sp = line.find(' ', 6);
            t.error_ = sp == std::string::npos ? line.substr(6) : line.substr(sp + 1);
            t.emitLogMessage(kLogErr, t.error_);
        }
    }
    return eof;
}

void ImportManagerObject::finished(uint32_t id) {
    auto it = transfers_.find(id);
    if (it == transfers_.end()) return;
    TransferObject& t = *it->second;
    int status = 0;
    if (t.unit_.empty()) {
        ::waitpid(t.pid_, &status, 0);
        t.pid_ = -1;
        read_progress(t);  // whatever the child wrote before exiting
    }
    loop_.unwatch_fd(t.progress_fd_.get());
    // A unit's exit status stays with systemd: DONE is the last thing the helper says on success.
    bool ok = t.done_ && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    std::string result = ok ? "done" : t.canceled_ ? "canceled" : "failed";
    if (!ok && t.error_.empty() && !t.canceled_)
        t.emitLogMessage(kLogErr, t.unit_.empty() ? "machd-transfer exited with status " + std::to_string(status)
                                                  : "machd-transfer ended without a result (journalctl -u " + t.unit_ + ")");
    sdbus::ObjectPath path(t.path());
    std::fprintf(stderr, "machd: transfer %u (%s %s): %s%s%s\n", id, t.type_.c_str(), t.local_.c_str(), result.c_str(),
                 t.error_.empty() ? "" : ": ", t.error_.c_str());
    auto owned = std::move(it->second);
    transfers_.erase(it);
    owned.reset();  // unregisters the object before the signal, as importd
    emitTransferRemoved(id, path, result);
}

ImportManagerObject::Reply ImportManagerObject::import(const char* type, const sdbus::UnixFd& fd, const std::string& local,
                                                       bool force, bool read_only) {
    std::vector<std::string> args{type};
    if (force) args.push_back("--force");
    if (read_only) args.push_back("--read-only");
    args.push_back("--pool=" + pool_);
    args.push_back("--progress-fd=3");
    if (std::string(type) == "import-fs") {
        // The directory fd becomes stdin; the helper opens it through /proc.
        args.push_back("/proc/self/fd/0");
    } else {
        args.push_back("-");
    }
    args.push_back(local);
    return start(type, local, "", "", fd.get(), false, std::move(args));
}

ImportManagerObject::Reply ImportManagerObject::export_(const char* type, const std::string& local, const sdbus::UnixFd& fd,
                                                        const std::string& format) {
    if (!format.empty() && format != "uncompressed" && format != "xz" && format != "gzip" && format != "bzip2" &&
        format != "zstd")
        throw bus_error(kInvalidArgs, "Unknown format specified: " + format);
    std::vector<std::string> args{type};
    if (!format.empty()) args.push_back("--format=" + format);
    args.push_back("--pool=" + pool_);
    args.push_back("--progress-fd=3");
    args.push_back(local);
    args.push_back("-");
    return start(type, local, "", "", fd.get(), true, std::move(args));
}

ImportManagerObject::Reply ImportManagerObject::pull(const char* type, const std::string& url, const std::string& local,
                                                     const std::string& verify, bool force) {
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0)
        throw bus_error(kInvalidArgs, "URL " + url + " is invalid");
    std::string v = verify.empty() ? "signature" : verify;
    if (v != "no" && v != "checksum" && v != "signature")
        throw bus_error(kInvalidArgs, "Unknown verification mode " + verify);
    std::vector<std::string> args{type, "--verify=" + v};
    if (force) args.push_back("--force");
    args.push_back("--pool=" + pool_);
    args.push_back("--progress-fd=3");
    args.push_back(url);
    args.push_back(local);
    return start(type, local, url, v, -1, false, std::move(args));
}

ImportManagerObject::Reply ImportManagerObject::ImportTar(const sdbus::UnixFd& fd, const std::string& local_name,
                                                          const bool& force, const bool& read_only) {
    return import("import-tar", fd, local_name, force, read_only);
}
ImportManagerObject::Reply ImportManagerObject::ImportRaw(const sdbus::UnixFd& fd, const std::string& local_name,
                                                          const bool& force, const bool& read_only) {
    return import("import-raw", fd, local_name, force, read_only);
}
ImportManagerObject::Reply ImportManagerObject::ImportFileSystem(const sdbus::UnixFd& fd, const std::string& local_name,
                                                                 const bool& force, const bool& read_only) {
    return import("import-fs", fd, local_name, force, read_only);
}
ImportManagerObject::Reply ImportManagerObject::ExportTar(const std::string& local_name, const sdbus::UnixFd& fd,
                                                          const std::string& format) {
    return export_("export-tar", local_name, fd, format);
}
ImportManagerObject::Reply ImportManagerObject::ExportRaw(const std::string& local_name, const sdbus::UnixFd& fd,
                                                          const std::string& format) {
    return export_("export-raw", local_name, fd, format);
}
ImportManagerObject::Reply ImportManagerObject::PullTar(const std::string& url, const std::string& local_name,
                                                        const std::string& verify_mode, const bool& force) {
    return pull("pull-tar", url, local_name, verify_mode, force);
}
ImportManagerObject::Reply ImportManagerObject::PullRaw(const std::string& url, const std::string& local_name,
                                                        const std::string& verify_mode, const bool& force) {
    return pull("pull-raw", url, local_name, verify_mode, force);
}

namespace {

constexpr uint64_t kFlagForce = 1, kFlagReadOnly = 2, kFlagFlatten = uint64_t{1} << 32;

std::vector<std::string> oci_args(const char* type, const std::string& image_class, uint64_t flags,
                                  const std::string& pool) {
    if (!image_class.empty() && image_class != "machine")
        throw bus_error(kInvalidArgs, "OCI images can only be of class 'machine', not '" + image_class + "'");
    if (flags & ~(kFlagForce | kFlagReadOnly | kFlagFlatten))
        throw bus_error(kInvalidArgs, "Unknown flags " + std::to_string(flags) + " for " + type);
    std::vector<std::string> args{type};
    if (flags & kFlagForce) args.push_back("--force");
    if (flags & kFlagReadOnly) args.push_back("--read-only");
    if (flags & kFlagFlatten) args.push_back("--flatten");
    args.push_back("--pool=" + pool);
    args.push_back("--progress-fd=3");
    return args;
}

}  // namespace

ImportManagerObject::Reply ImportManagerObject::PullOci(const std::string& ref, const std::string& local_name,
                                                        const std::string& image_class, const uint64_t& flags) {
    // The reference is parsed (strictly) by machd-transfer; here only what would reach its argv as
    // an option or could not be a reference at all.
    if (ref.empty() || ref.size() > 1024 || ref[0] == '-' || ref.find_first_of(" \t\n") != std::string::npos)
        throw bus_error(kInvalidArgs, "Image reference " + ref.substr(0, 200) + " is invalid");
    auto args = oci_args("pull-oci", image_class, flags, pool_);
    args.push_back(ref);
    args.push_back(local_name);
    return start("pull-oci", local_name, ref, "", -1, false, std::move(args));
}

ImportManagerObject::Reply ImportManagerObject::ImportOci(const sdbus::UnixFd& fd, const std::string& local_name,
                                                          const std::string& image_class, const uint64_t& flags) {
    auto args = oci_args("import-oci", image_class, flags, pool_);
    // The fd (a layout directory or an archive) becomes stdin; the helper reopens it through /proc.
    args.push_back("/proc/self/fd/0");
    args.push_back(local_name);
    return start("import-oci", local_name, "", "", fd.get(), false, std::move(args));
}

std::vector<sdbus::Struct<uint32_t, std::string, std::string, std::string, double, sdbus::ObjectPath>>
ImportManagerObject::ListTransfers() {
    std::vector<sdbus::Struct<uint32_t, std::string, std::string, std::string, double, sdbus::ObjectPath>> out;
    for (auto& [id, t] : transfers_)
        out.emplace_back(id, t->type_, t->remote_, t->local_, t->progress_, sdbus::ObjectPath(t->path()));
    return out;
}

void ImportManagerObject::CancelTransfer(const uint32_t& transfer_id) {
    require_action(getObject(), kPolkitPull, "cancelling transfers");
    auto it = transfers_.find(transfer_id);
    if (it == transfers_.end()) throw bus_error(kNoSuchTransfer, "No transfer by id " + std::to_string(transfer_id));
    it->second->cancel();
}

}  // namespace mk::bus
