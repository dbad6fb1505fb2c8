// machd-transfer: runs one image transfer (import, export, pull) in a process of its own, so
// machd never parses or decompresses image data. Sandboxed before it touches any input:
// no_new_privs, a reduced capability set, and a seccomp deny-list (no exec, no mounts, no
// namespace games, no network unless pulling, no device nodes unless copying a tree).
//
//   machd-transfer VERB [OPTIONS] ARGS...
//     import-tar|import-raw  SOURCE NAME    SOURCE: file, or "-" for stdin
//     import-fs              DIRECTORY NAME
//     export-tar|export-raw  NAME [DEST]    DEST: file, or "-"/absent for stdout
//     pull-tar|pull-raw      URL NAME
//     import-oci             LAYOUT-DIR|OCI-ARCHIVE NAME
//     pull-oci               REF NAME
//   OCI: --flatten  --arch=GOARCH  --parallel=N  --stall-timeout=SEC
//        --registries-dir=DIR (default /etc/machkit/registries.d)
//   --pool=DIR  --verify=no|checksum|signature  --force  --read-only
//   --format=uncompressed|xz|gzip|bzip2|zstd  --level=N  --threads=N  --progress-fd=N
//   --keyring=FILE (signature verification; default /etc/systemd/import-pubring.gpg, else
//   /usr/lib/systemd/import-pubring.gpg)
//
// Progress protocol on --progress-fd (one write(2) per line): "PROGRESS <0-100>", "LOG <text>"
// (control characters escaped as \xNN), and at the end "DONE" or "ERROR <errno> <text>".
// Exit status 0 on success, 1 with a one-line "machd-transfer: <error>" on stderr otherwise.
#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/io.hpp"
#include "core/base/strings.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/image/oci_store.hpp"
#include "core/image/transfer_ops.hpp"

using namespace mk::core;

namespace {

std::atomic<bool> g_cancel{false};
int g_progress_fd = -1;

void emit(const std::string& line) {
    if (g_progress_fd < 0) return;
    std::string l = line + "\n";
    // One write per line: lines from the decoder thread and the main thread never interleave.
    retry_eintr([&] { return write(g_progress_fd, l.data(), l.size()); });
}

void log_line(const std::string& m) {
    if (g_progress_fd >= 0) emit("LOG " + escape_control_chars(m));
    else fprintf(stderr, "%s\n", escape_control_chars(m).c_str());
}

[[noreturn]] void usage_fail(const std::string& m) { throw UsageError(m); }

struct Args {
    std::string verb;
    std::vector<std::string> pos;
    std::string pool = "/var/lib/machines";
    VerifyMode verify = VerifyMode::signature;
    bool verify_set = false;
    bool force = false, read_only = false;
    std::optional<Compression> format;
    int level = -1;
    unsigned threads = 0;
    std::string keyring;  // default: default_keyring()
    bool flatten = false;
    std::string arch;
    unsigned parallel = 3;
    unsigned stall_timeout = 60;
    std::string registries_dir = "/etc/machkit/registries.d";
};

Args parse(int argc, char** argv) {
    Args a;
    if (argc < 2) usage_fail("usage: machd-transfer VERB [OPTIONS] ARGS... (see --help)");
    for (int i = 1; i < argc; i++) {
        std::string s = argv[i];
        auto val = [&](const char* opt) -> std::optional<std::string> {
            std::string p = std::string(opt) + "=";
            if (s.rfind(p, 0) == 0) return s.substr(p.size());
            return std::nullopt;
        };
        if (s == "--help" || s == "-h") {
            printf(
                "machd-transfer import-tar|import-raw SOURCE NAME | import-fs DIR NAME | export-tar|export-raw NAME [DEST]\n"
                "               | pull-tar|pull-raw URL NAME\n"
                "  --pool=DIR --verify=no|checksum|signature --force --read-only\n"
                "  --format=uncompressed|xz|gzip|bzip2|zstd --level=N --threads=N --progress-fd=N\n");
            exit(0);
        } else if (auto v = val("--pool")) {
            a.pool = *v;
        } else if (auto v = val("--verify")) {
            auto m = verify_mode_from_string(*v);
            if (!m) usage_fail("invalid --verify= value '" + *v + "'");
            a.verify = *m;
            a.verify_set = true;
        } else if (auto v = val("--keyring")) {
            a.keyring = *v;
        } else if (s == "--flatten") {
            a.flatten = true;
        } else if (auto v = val("--arch")) {
            if (v->empty() || v->size() > 32) usage_fail("invalid --arch=");
            a.arch = *v;
        } else if (auto v = val("--parallel")) {
            long t = std::stol(*v);
            if (t < 1 || t > 8) usage_fail("--parallel= takes 1 to 8");
            a.parallel = static_cast<unsigned>(t);
        } else if (auto v = val("--stall-timeout")) {
            long t = std::stol(*v);
            if (t < 1 || t > 3600) usage_fail("--stall-timeout= takes 1 to 3600 seconds");
            a.stall_timeout = static_cast<unsigned>(t);
        } else if (auto v = val("--registries-dir")) {
            a.registries_dir = *v;
        } else if (s == "--force") {
            a.force = true;
        } else if (s == "--read-only") {
            a.read_only = true;
        } else if (auto v = val("--format")) {
            auto c = compression_from_string(*v);
            if (!c) usage_fail("invalid --format= value '" + *v + "'");
            a.format = *c;
        } else if (auto v = val("--level")) {
            a.level = std::stoi(*v);
            if (a.level < 0 || a.level > 22) usage_fail("invalid --level=");
        } else if (auto v = val("--threads")) {
            long t = std::stol(*v);
            if (t < 0 || t > 64) usage_fail("invalid --threads=");
            a.threads = static_cast<unsigned>(t);
        } else if (auto v = val("--progress-fd")) {
            g_progress_fd = std::stoi(*v);
            if (g_progress_fd < 0 || fcntl(g_progress_fd, F_GETFD) < 0) usage_fail("--progress-fd: not an open fd");
        } else if (s.size() > 1 && s[0] == '-' && s != "-") {
            usage_fail("unknown option " + s);
        } else if (a.verb.empty()) {
            a.verb = s;
        } else {
            a.pos.push_back(s);
        }
    }
    return a;
}

// The capabilities a transfer needs: owners, modes and file capabilities of the image's files,
// reading any file when exporting, and the immutable flag for read-only images.
constexpr uint64_t kKeepCaps = cap_bit(CAP_CHOWN) | cap_bit(CAP_FOWNER) | cap_bit(CAP_FSETID) | cap_bit(CAP_DAC_OVERRIDE) |
                               cap_bit(CAP_DAC_READ_SEARCH) | cap_bit(CAP_SETFCAP) | cap_bit(CAP_LINUX_IMMUTABLE) |
                               cap_bit(CAP_MKNOD);

void sandbox(TransferType t) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) throw_last_error("PR_SET_NO_NEW_PRIVS");
    if (geteuid() == 0) {
        uint64_t keep = kKeepCaps & current_permitted_capabilities();
        // OCI layers need CAP_MKNOD for overlayfs whiteouts (char 0/0; the filter below allows no other).
        if (t != TransferType::import_fs && t != TransferType::import_oci && t != TransferType::pull_oci)
            keep &= ~cap_bit(CAP_MKNOD);
        if (int r = drop_bounding_set(keep); r < 0) throw_errno(-r, "cannot drop capabilities from the bounding set");
        if (int r = set_capabilities(keep, 0); r < 0) throw_errno(-r, "cannot drop capabilities");
    }
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) throw_errno(ENOMEM, "seccomp_init");
    std::unique_ptr<void, void (*)(void*)> guard(ctx, [](void* c) { seccomp_release(c); });
    // The same rules for the compat ABIs, else int 0x80 would walk around them.
    seccomp_arch_add(ctx, SCMP_ARCH_X86);
    seccomp_arch_add(ctx, SCMP_ARCH_X32);
    auto deny = [&](const char* name) {
        int nr = seccomp_syscall_resolve_name(name);
        if (nr == __NR_SCMP_ERROR) return;
        seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    };
    for (const char* n : {"execve",
                          "execveat",
                          "ptrace",
                          "process_vm_readv",
                          "process_vm_writev",
                          "mount",
                          "umount2",
                          "umount",
                          "pivot_root",
                          "chroot",
                          "setns",
                          "unshare",
                          "move_mount",
                          "open_tree",
                          "fsopen",
                          "fsmount",
                          "fsconfig",
                          "fspick",
                          "mount_setattr",
                          "kexec_load",
                          "kexec_file_load",
                          "init_module",
                          "finit_module",
                          "delete_module",
                          "bpf",
                          "perf_event_open",
                          "keyctl",
                          "add_key",
                          "request_key",
                          "userfaultfd",
                          "swapon",
                          "swapoff",
                          "reboot",
                          "setuid",
                          "setgid",
                          "setreuid",
                          "setregid",
                          "setresuid",
                          "setresgid",
                          "setgroups",
                          "acct",
                          "settimeofday",
                          "clock_settime",
                          "iopl",
                          "ioperm",
                          "personality",
                          "open_by_handle_at",
                          "name_to_handle_at"})
        deny(n);
    bool pulling = t == TransferType::pull_tar || t == TransferType::pull_raw || t == TransferType::pull_oci;
    if (!pulling) {
        int nr = seccomp_syscall_resolve_name("socket");
        for (int fam : {AF_INET, AF_INET6, AF_PACKET})
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), nr, 1, SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(fam)));
    }
    if (t == TransferType::import_oci || t == TransferType::pull_oci) {
        // Whiteouts are char devices 0/0; no other device node is ever made.
        for (const char* n : {"mknod", "mknodat"}) {
            int nr = seccomp_syscall_resolve_name(n);
            unsigned arg = strcmp(n, "mknod") == 0 ? 1 : 2;
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1,
                             scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, S_IFMT, scmp_datum_t{S_IFBLK}});
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 2,
                             scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, S_IFMT, scmp_datum_t{S_IFCHR}},
                             scmp_arg_cmp{arg + 1, SCMP_CMP_NE, 0, 0});
        }
    } else if (t != TransferType::import_fs) {
        // Device nodes never come from an archive or a download.
        for (const char* n : {"mknod", "mknodat"}) {
            int nr = seccomp_syscall_resolve_name(n);
            unsigned arg = strcmp(n, "mknod") == 0 ? 1 : 2;
            for (scmp_datum_t type : {scmp_datum_t{S_IFCHR}, scmp_datum_t{S_IFBLK}})
                seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1, scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, S_IFMT, type});
        }
    }
    if (int r = seccomp_load(ctx); r < 0) throw_errno(-r, "cannot load the seccomp filter");
}

// registries.d/*.conf in name order, later files overriding earlier ones (host config is trusted
// but still parsed strictly: a typo must fail, not silently talk to another host).
void load_registries(const std::string& dir, OciRegistryConfig& cfg) {
    UniqueFd d(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!d) {
        if (errno == ENOENT) return;
        throw_last_error("cannot open " + dir);
    }
    std::vector<std::string> names;
    DIR* ds = fdopendir(fcntl(d.get(), F_DUPFD_CLOEXEC, 3));
    if (!ds) throw_last_error("cannot read " + dir);
    while (dirent* e = readdir(ds)) {
        std::string n = e->d_name;
        if (n.size() > 5 && n.ends_with(".conf") && n[0] != '.') names.push_back(n);
    }
    closedir(ds);
    std::sort(names.begin(), names.end());
    if (names.size() > 256) throw UsageError(dir + ": more than 256 files");
    for (const auto& n : names) {
        auto text = read_file_in_root(d.get(), n, 1 << 20);
        if (text) parse_oci_registries_file(*text, dir + "/" + n, cfg);
    }
}

UniqueFd open_source(const std::string& s) {
    if (s == "-") return UniqueFd(fcntl(0, F_DUPFD_CLOEXEC, 3));
    UniqueFd fd(open(s.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd) throw_last_error("cannot open " + s);
    return fd;
}

int run(int argc, char** argv) {
    Args a = parse(argc, argv);
    auto type = transfer_type_from_string(a.verb);
    if (!type) usage_fail("unknown verb '" + a.verb + "'");
    bool is_export = *type == TransferType::export_tar || *type == TransferType::export_raw;
    if (a.pos.size() != 2 && !(is_export && a.pos.size() == 1))
        usage_fail(std::string(to_string(*type)) + " takes two arguments");

    struct sigaction sa {};
    sa.sa_handler = [](int) { g_cancel = true; };
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    // Open what needs opening by path before the sandbox: the pool, inputs, outputs.
    ImagePool pool(a.pool);
    UniqueFd io;
    ExportTree tree;
    std::unique_ptr<GpgVerifier> gpg;
    bool pulling = *type == TransferType::pull_tar || *type == TransferType::pull_raw;
    switch (*type) {
    case TransferType::import_tar:
    case TransferType::import_raw: io = open_source(a.pos[0]); break;
    case TransferType::import_oci:
        io.reset(open(a.pos[0].c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
        if (!io) throw_last_error("cannot open " + a.pos[0]);
        if (int fl = fcntl(io.get(), F_GETFL); fl >= 0) fcntl(io.get(), F_SETFL, fl & ~O_NONBLOCK);
        break;
    case TransferType::pull_oci: break;
    case TransferType::import_fs:
        io.reset(open(a.pos[0].c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!io) throw_last_error("cannot open directory " + a.pos[0]);
        break;
    case TransferType::export_tar:
        // A layer stack's merged view is a detached overlay: made here, before the sandbox takes
        // CAP_SYS_ADMIN and mount calls away.
        tree = open_export_tree(pool, a.pos[0]);
        [[fallthrough]];
    case TransferType::export_raw:
        if (a.pos.size() == 1 || a.pos[1] == "-") {
            io.reset(fcntl(1, F_DUPFD_CLOEXEC, 3));
        } else {
            io.reset(open(a.pos[1].c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644));
            if (!io) throw_last_error("cannot create " + a.pos[1]);
            if (!a.format) a.format = compression_from_filename(a.pos[1]);
        }
        break;
    case TransferType::pull_tar:
    case TransferType::pull_raw:
        if (a.verify == VerifyMode::signature) {
            std::string k = a.keyring.empty() ? default_keyring() : a.keyring;
            // gpgv looks a keyring name without a slash up in its home directory.
            if (!k.empty() && k[0] != '/') {
                char* abs = realpath(k.c_str(), nullptr);
                if (!abs) throw_last_error("cannot find keyring " + k);
                k = abs;
                free(abs);
            }
            if (!a.keyring.empty() && access(k.c_str(), R_OK) < 0) throw_last_error("cannot read keyring " + k);
            if (!k.empty()) gpg = std::make_unique<GpgVerifier>(k);  // forks before the sandbox
        }
        break;
    }
    (void)pulling;
    OciInstallOptions oci;
    if (*type == TransferType::import_oci || *type == TransferType::pull_oci) {
        oci.force = a.force;
        oci.read_only = a.read_only;
        oci.flatten = a.flatten;
        oci.arch = a.arch;
        oci.parallel = a.parallel;
        oci.fetch.stall_timeout_sec = a.stall_timeout;
        load_registries(a.registries_dir, oci.registries);
    }
    sandbox(*type);

    TransferHooks hooks;
    hooks.cancel = &g_cancel;
    hooks.log = log_line;
    hooks.progress = [](unsigned p) { emit("PROGRESS " + std::to_string(p)); };
    ImportOptions io_opts;
    io_opts.force = a.force;
    io_opts.read_only = a.read_only;
    io_opts.threads = a.threads;
    io_opts.hooks = hooks;
    ExportImageOptions ex;
    ex.compression = a.format.value_or(Compression::none);
    ex.compress.level = a.level;
    ex.compress.threads = a.threads;
    ex.hooks = hooks;

    switch (*type) {
    case TransferType::import_tar: import_tar(pool, io.get(), a.pos[1], io_opts); break;
    case TransferType::import_raw: import_raw(pool, io.get(), a.pos[1], io_opts); break;
    case TransferType::import_fs: import_fs(pool, io.get(), a.pos[1], io_opts); break;
    case TransferType::export_tar: export_tar(tree.tree.get(), a.pos[0], io.get(), ex); break;
    case TransferType::export_raw: export_raw(pool, a.pos[0], io.get(), ex); break;
    case TransferType::pull_tar: pull_tar(pool, a.pos[0], a.pos[1], a.verify, gpg.get(), io_opts); break;
    case TransferType::pull_raw: pull_raw(pool, a.pos[0], a.pos[1], a.verify, gpg.get(), io_opts); break;
    case TransferType::import_oci:
        oci.hooks = hooks;
        import_oci(pool, io.get(), a.pos[1], oci);
        break;
    case TransferType::pull_oci:
        oci.hooks = hooks;
        pull_oci(pool, a.pos[0], a.pos[1], oci);
        break;
    }
    if (is_export && fsync(io.get()) < 0 && errno != EINVAL && errno != EROFS) {
        if (errno == ENOSPC) throw_last_error("disk full while writing output");
    }
    emit("DONE");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::system_error& e) {
        std::string m = describe(e);
        emit("ERROR " + std::to_string(e.code().value()) + " " + escape_control_chars(m));
        fprintf(stderr, "machd-transfer: %s\n", escape_control_chars(m).c_str());
    } catch (const std::exception& e) {
        std::string m = describe(e);
        emit("ERROR " + std::to_string(EINVAL) + " " + escape_control_chars(m));
        fprintf(stderr, "machd-transfer: %s\n", escape_control_chars(m).c_str());
    }
    return 1;
}
