#include "core/criu/swrk.hpp"

#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "core/base/error.hpp"
#include "core/base/io.hpp"

namespace mk::core::criu {

namespace {

// criu's replies are small (errors, versions, a pid); anything larger is not criu speaking.
constexpr size_t kMaxReply = 1 << 20;

std::vector<std::string> split_words(std::string_view s) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) ++i;
        size_t j = i;
        while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\n') ++j;
        if (j > i) out.emplace_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}

}  // namespace

CriuCommand criu_command(std::string_view configured) {
    std::string source(configured);
    if (source.empty()) {
        const char* env = getenv("MK_CRIU");
        source = env && *env ? env : "criu";
    }
    CriuCommand cmd{split_words(source)};
    if (cmd.argv.empty()) throw UsageError("the criu command line is empty; give a program, e.g. MK_CRIU=/usr/sbin/criu");
    return cmd;
}

std::string to_string(const CriuCommand& cmd) {
    std::string s;
    for (const auto& a : cmd.argv) s += (s.empty() ? "" : " ") + a;
    return s;
}

Swrk::Swrk(const CriuCommand& cmd, std::span<const int> inherit, const std::string& fresh_sysfs, const std::string& open_tmp,
           const std::string& open_tmp_root) {
    int sv[2];
    check(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), "socketpair for criu swrk");
    UniqueFd ours(sv[0]), theirs(sv[1]);
    // Everything the child needs is built before fork: after it only async-signal-safe calls.
    std::vector<std::string> args = cmd.argv;
    args.emplace_back("swrk");
    args.emplace_back(std::to_string(theirs.get()));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<int> keep(inherit.begin(), inherit.end());
    keep.push_back(theirs.get());

    pid_t pid = fork();
    if (pid < 0) throw_last_error("fork for criu");
    if (pid == 0) {
        for (int fd : keep)
            if (fcntl(fd, F_SETFD, 0) < 0) _exit(126);
        // criu must not die with a signal mask or dispositions our caller set for itself.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        signal(SIGPIPE, SIG_DFL);
        if (!fresh_sysfs.empty() || !open_tmp.empty()) {
            if (unshare(CLONE_NEWNS) < 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) _exit(125);
            if (!fresh_sysfs.empty() &&
                mount("sysfs", fresh_sysfs.c_str(), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0)
                _exit(125);
            if (!open_tmp.empty()) {
                const std::string upper = open_tmp + "/upper", work = open_tmp + "/work";
                const std::string opts = "lowerdir=/tmp,upperdir=" + upper + ",workdir=" + work;
                const std::string root = open_tmp + "/root";
                if (mount("tmpfs", open_tmp.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") < 0 ||
                    mkdir(root.c_str(), 0700) < 0 ||
                    mount(open_tmp_root.c_str(), root.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0 ||
                    mkdir(upper.c_str(), 01777) < 0 || chmod(upper.c_str(), 01777) < 0 || mkdir(work.c_str(), 0700) < 0 ||
                    mount("overlay", "/tmp", "overlay", MS_NOSUID | MS_NODEV, opts.c_str()) < 0)
                    _exit(125);
            }
        }
        execvp(argv[0], argv.data());
        _exit(127);
    }
    pid_ = pid;
    sock_ = std::move(ours);
}

Swrk::~Swrk() {
    if (pid_ > 0) {
        kill(pid_, SIGKILL);
        (void)retry_eintr([&] { return waitpid(pid_, nullptr, 0); });
    }
}

int Swrk::finish() {
    sock_.reset();
    int status = 0;
    if (pid_ > 0) {
        if (retry_eintr([&] { return waitpid(pid_, &status, 0); }) < 0) throw_last_error("wait for criu");
        pid_ = -1;
    }
    return status;
}

std::string Swrk::receive(UniqueFd& fd) {
    char probe;
    struct iovec piov = {&probe, 1};
    struct msghdr peek = {};
    peek.msg_iov = &piov;
    peek.msg_iovlen = 1;
    ssize_t len;
    len = retry_eintr([&] { return recvmsg(sock_.get(), &peek, MSG_PEEK | MSG_TRUNC); });
    if (len < 0) throw_last_error("read from criu");
    if (len == 0) {
        int status = finish();
        std::string how = WIFEXITED(status)     ? "exited with status " + std::to_string(WEXITSTATUS(status))
                          : WIFSIGNALED(status) ? std::string("was killed by signal ") + strsignal(WTERMSIG(status))
                                                : "stopped";
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
            throw UsageError("the criu command could not be run (exit 127); check MK_CRIU / --criu");
        throw std::runtime_error("criu " + how + " without a reply");
    }
    if (static_cast<size_t>(len) > kMaxReply) throw std::runtime_error("criu sent an oversized reply");
    std::string buf(static_cast<size_t>(len), '\0');
    struct iovec iov = {buf.data(), buf.size()};
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n;
    n = retry_eintr([&] { return recvmsg(sock_.get(), &msg, MSG_CMSG_CLOEXEC); });
    if (n < 0) throw_last_error("read from criu");
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (!fd) fd.reset(got);
            else close(got);
        }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) throw std::runtime_error("criu's reply was truncated");
    buf.resize(static_cast<size_t>(n));
    return buf;
}

Response Swrk::call(const Request& req, const NotifyHandler& notify) {
    auto send_req = [&](const Request& r) {
        std::string bytes = encode_request(r);
        ssize_t n;
        n = retry_eintr([&] { return send(sock_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL); });
        if (n < 0) throw_last_error("write to criu");
    };
    send_req(req);
    std::string handler_error;
    for (;;) {
        UniqueFd fd;
        Response resp = decode_response(receive(fd));
        if (resp.type != ReqType::Notify) {
            if (!handler_error.empty()) throw std::runtime_error(handler_error);
            return resp;
        }
        bool ok = true;
        if (notify) {
            try {
                notify(resp.notify_script, resp.notify_pid.value_or(0), std::move(fd));
            } catch (const std::exception& e) {
                ok = false;
                if (handler_error.empty()) handler_error = describe(e);
            }
        }
        Request ack;
        ack.type = ReqType::Notify;
        ack.notify_success = ok;
        send_req(ack);
    }
}

void require_success(const Response& resp, std::string_view what, std::string_view log_hint) {
    if (resp.success) return;
    std::string msg = "criu " + std::string(what) + " failed";
    if (!resp.cr_errmsg.empty()) msg += ": " + resp.cr_errmsg;
    else if (resp.cr_errno && *resp.cr_errno > 0) msg += ": " + std::string(strerror(*resp.cr_errno));
    if (!log_hint.empty()) msg += " (see " + std::string(log_hint) + ")";
    throw std::runtime_error(msg);
}

Response call_once(const CriuCommand& cmd, const Request& req) {
    Swrk s(cmd);
    Response r = s.call(req);
    s.finish();
    return r;
}

}  // namespace mk::core::criu
