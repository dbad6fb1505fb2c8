#include "core/image/pull.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/string_table.hpp"
#include "core/image/sha256sums.hpp"

namespace mk::core {

namespace {

void curl_init_once() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
};

struct Xfer {
    ByteSink* sink = nullptr;
    const HttpOptions* opts = nullptr;
    uint64_t got = 0;
    std::exception_ptr err;
    bool too_big = false;
};

size_t on_data(char* p, size_t size, size_t n, void* ud) {
    auto* x = static_cast<Xfer*>(ud);
    size_t len = size * n;
    if (x->got + len > x->opts->max_bytes) {
        x->too_big = true;
        return 0;
    }
    try {
        x->sink->write(p, len);
    } catch (...) {
        x->err = std::current_exception();
        return 0;
    }
    x->got += len;
    return len;
}

int on_progress(void* ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t, curl_off_t) {
    auto* x = static_cast<Xfer*>(ud);
    if (x->opts->cancel && x->opts->cancel->load()) return 1;
    if (x->opts->progress) x->opts->progress(static_cast<uint64_t>(dlnow), static_cast<uint64_t>(dltotal));
    return 0;
}

// Credentials in a URL must never reach a log line.
std::string redact(std::string_view url) {
    size_t scheme = url.find("://");
    if (scheme == std::string_view::npos) return std::string(url);
    size_t host_start = scheme + 3;
    size_t host_end = url.find_first_of("/?#", host_start);
    std::string_view authority =
        url.substr(host_start, host_end == std::string_view::npos ? std::string_view::npos : host_end - host_start);
    size_t at = authority.rfind('@');
    if (at == std::string_view::npos) return std::string(url);
    return std::string(url.substr(0, host_start)) + "***@" + std::string(url.substr(host_start + at + 1));
}

constexpr std::array<EnumName<VerifyMode>, 3> kVerifyModeNames{
    {{VerifyMode::no, "no"}, {VerifyMode::checksum, "checksum"}, {VerifyMode::signature, "signature"}}};

}  // namespace

std::string_view to_string(VerifyMode m) { return enum_to_string(kVerifyModeNames, m, "?"); }

std::optional<VerifyMode> verify_mode_from_string(std::string_view s) { return enum_from_string(kVerifyModeNames, s); }

bool url_is_valid(std::string_view url) {
    if (url.empty() || url.size() > 4096) return false;
    for (unsigned char c : url)
        if (c <= ' ' || c == 0x7f) return false;
    std::string_view rest;
    if (url.starts_with("http://")) rest = url.substr(7);
    else if (url.starts_with("https://")) rest = url.substr(8);
    else return false;
    size_t end = rest.find_first_of("/?#");
    std::string_view host = rest.substr(0, end);
    if (host.empty() || host.back() == '@') return false;
    return true;
}

std::string url_last_component(std::string_view url) {
    size_t cut = url.find_first_of("?#");
    if (cut != std::string_view::npos) url = url.substr(0, cut);
    size_t scheme = url.find("://");
    size_t path = url.find('/', scheme == std::string_view::npos ? 0 : scheme + 3);
    if (path == std::string_view::npos) return "";
    size_t slash = url.rfind('/');
    return std::string(url.substr(slash + 1));
}

std::string url_sibling(std::string_view url, std::string_view file) {
    size_t cut = url.find_first_of("?#");
    if (cut != std::string_view::npos) url = url.substr(0, cut);
    size_t slash = url.rfind('/');
    return std::string(url.substr(0, slash + 1)) + std::string(file);
}

uint64_t http_download(const std::string& url, ByteSink& sink, const HttpOptions& opts) {
    if (!url_is_valid(url)) throw UsageError("invalid URL (only http:// and https:// are supported): " + redact(url));
    curl_init_once();
    std::unique_ptr<CURL, CurlDeleter> c(curl_easy_init());
    if (!c) throw_errno(ENOMEM, "curl_easy_init");
    Xfer x;
    x.sink = &sink;
    x.opts = &opts;
    char errbuf[CURL_ERROR_SIZE] = {};
    CURL* h = c.get();
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 30L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "machkit-transfer/" MK_VERSION);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
    CURLcode r = curl_easy_perform(h);
    if (r == CURLE_OK) return x.got;
    std::string u = redact(url);
    std::string detail = errbuf[0] ? errbuf : curl_easy_strerror(r);
    if (x.err) std::rethrow_exception(x.err);
    if (x.too_big) throw_errno(EFBIG, "download of " + u + " exceeds the size limit");
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    switch (r) {
    case CURLE_ABORTED_BY_CALLBACK: throw_errno(ECANCELED, "download of " + u + " cancelled");
    case CURLE_HTTP_RETURNED_ERROR:
        throw_errno(code == 404 ? ENOENT : EIO, "server returned HTTP " + std::to_string(code) + " for " + u);
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
        throw_errno(ECONNRESET, "download of " + u + " interrupted after " + std::to_string(x.got) +
                                    " bytes (connection closed): " + detail);
    case CURLE_OPERATION_TIMEDOUT: throw_errno(ETIMEDOUT, "download of " + u + " stalled: " + detail);
    case CURLE_COULDNT_CONNECT: throw_errno(ECONNREFUSED, "cannot connect for " + u + ": " + detail);
    case CURLE_COULDNT_RESOLVE_HOST: throw_errno(EHOSTUNREACH, "cannot resolve host of " + u);
    case CURLE_UNSUPPORTED_PROTOCOL: throw UsageError("redirect to an unsupported protocol refused for " + u);
    default: throw_errno(EIO, "download of " + u + " failed: " + detail);
    }
}

std::optional<std::string> http_get_small(const std::string& url, size_t max, const std::atomic<bool>* cancel) {
    class StringSink final : public ByteSink {
    public:
        std::string s;
        void write(const void* b, size_t n) override { s.append(static_cast<const char*>(b), n); }
    } sink;
    HttpOptions o;
    o.max_bytes = max;
    o.cancel = cancel;
    try {
        http_download(url, sink, o);
    } catch (const std::system_error& e) {
        if (e.code().value() == ENOENT) return std::nullopt;
        throw;
    }
    return std::move(sink.s);
}

std::string default_keyring() {
    for (const char* p : {"/etc/systemd/import-pubring.gpg", "/usr/lib/systemd/import-pubring.gpg"})
        if (access(p, R_OK) == 0) return p;
    return "";
}

GpgVerifier::GpgVerifier(std::string keyring) : keyring_(std::move(keyring)) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) throw_last_error("socketpair");
    pid_t pid = fork();
    if (pid < 0) {
        ::close(sv[0]);
        ::close(sv[1]);
        throw_last_error("fork");
    }
    if (pid == 0) {
        // Child: read "<u64 len>data<u64 len>sig" into two memfds, then exec gpgv on them with
        // its messages going back over the socket. Only async-signal-safe calls until exec
        // would be ideal; this child is single-threaded at fork time by construction.
        ::close(sv[0]);
        int s = sv[1];
        int fds[2];
        for (int i = 0; i < 2; i++) {
            uint64_t len = 0;
            size_t got = 0;
            while (got < sizeof len) {
                ssize_t r = ::read(s, reinterpret_cast<char*>(&len) + got, sizeof len - got);
                if (r <= 0) _exit(3);
                got += static_cast<size_t>(r);
            }
            if (len > (64u << 20)) _exit(3);
            fds[i] = memfd_create(i == 0 ? "data" : "sig", 0);
            if (fds[i] < 0) _exit(3);
            char buf[65536];
            while (len > 0) {
                ssize_t r = ::read(s, buf, std::min<uint64_t>(len, sizeof buf));
                if (r <= 0) _exit(3);
                if (::write(fds[i], buf, static_cast<size_t>(r)) != r) _exit(3);
                len -= static_cast<uint64_t>(r);
            }
        }
        char dpath[64], spath[64];
        snprintf(dpath, sizeof dpath, "/proc/self/fd/%d", fds[0]);
        snprintf(spath, sizeof spath, "/proc/self/fd/%d", fds[1]);
        dup2(s, 1);
        dup2(s, 2);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        const char* argv[] = {"gpgv", "--keyring", keyring_.c_str(), spath, dpath, nullptr};
        const char* envp[] = {"PATH=/usr/bin:/bin", "LC_ALL=C", nullptr};
        execve("/usr/bin/gpgv", const_cast<char* const*>(argv), const_cast<char* const*>(envp));
        _exit(127);
    }
    ::close(sv[1]);
    sock_.reset(sv[0]);
    pid_ = pid;
}

GpgVerifier::~GpgVerifier() {
    if (pid_ > 0) {
        sock_.reset();
        int st;
        retry_eintr([&] { return waitpid(pid_, &st, 0); });
    }
}

void GpgVerifier::verify(std::string_view data, std::string_view sig) {
    if (pid_ <= 0) throw_errno(EINVAL, "gpgv runner already used");
    auto send = [&](std::string_view s) {
        uint64_t len = s.size();
        std::string msg(reinterpret_cast<const char*>(&len), sizeof len);
        msg.append(s);
        const char* p = msg.data();
        size_t n = msg.size();
        while (n > 0) {
            ssize_t r = retry_eintr([&] { return ::send(sock_.get(), p, n, MSG_NOSIGNAL); });
            if (r < 0) throw_last_error("cannot talk to gpgv");
            p += r;
            n -= static_cast<size_t>(r);
        }
    };
    send(data);
    send(sig);
    shutdown(sock_.get(), SHUT_WR);
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t r = retry_eintr([&] { return ::read(sock_.get(), buf, sizeof buf); });
        if (r <= 0) break;
        if (out.size() < 16384) out.append(buf, static_cast<size_t>(r));
    }
    int st = 0;
    retry_eintr([&] { return waitpid(pid_, &st, 0); });
    pid_ = -1;
    for (char& ch : out)
        if (ch == '\n') ch = ' ';
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127) throw_errno(ENOENT, "cannot run /usr/bin/gpgv (is gpgv installed?)");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        throw_errno(EKEYREJECTED, "signature verification with keyring " + keyring_ + " failed: " + out);
}

void verify_download(const std::string& url, const std::string& sha256_hex, VerifyMode mode, GpgVerifier* gpg,
                     const std::function<void(const std::string&)>& log, const std::atomic<bool>* cancel) {
    if (mode == VerifyMode::no) return;
    std::string name = url_last_component(url);
    if (name.empty()) throw UsageError("cannot verify a URL without a file name");
    std::optional<std::string> sums;
    std::string sums_url;
    if (mode == VerifyMode::checksum) {
        // v252's order: SuSE-style NAME.sha256 first, then Ubuntu-style SHA256SUMS.
        sums_url = url_sibling(url, name + ".sha256");
        sums = http_get_small(sums_url, kSha256SumsMax + 1, cancel);
    }
    if (!sums) {
        sums_url = url_sibling(url, "SHA256SUMS");
        sums = http_get_small(sums_url, kSha256SumsMax + 1, cancel);
    }
    if (!sums)
        throw_errno(ENOENT, "no checksum file next to " + redact(url) + " (neither " + name + ".sha256 nor SHA256SUMS)");
    if (mode == VerifyMode::signature) {
        if (!gpg) throw_errno(ENOKEY, "signature verification requested but no keyring is configured");
        auto sig = http_get_small(sums_url + ".gpg", 1 << 20, cancel);
        if (!sig) throw_errno(ENOENT, "signature file " + redact(sums_url) + ".gpg not found");
        gpg->verify(*sums, *sig);
        if (log) log("Signature of " + url_last_component(sums_url) + " verified with keyring " + gpg->keyring() + ".");
    }
    std::string why;
    auto want = sha256sums_lookup(*sums, name, &why);
    if (!want) throw_errno(EBADMSG, "checksum verification failed: " + why);
    if (*want != sha256_hex)
        throw_errno(EBADMSG, "checksum mismatch for " + name + ": expected " + *want + ", got " + sha256_hex);
    if (log) log("SHA256 checksum of " + name + " is correct.");
}

}  // namespace mk::core
