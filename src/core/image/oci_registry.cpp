#include "core/image/oci_registry.hpp"

#include <curl/curl.h>

#include <cerrno>
#include <exception>
#include <memory>

#include "core/base/error.hpp"
#include "core/image/sha256sums.hpp"

namespace mk::core {

namespace {

constexpr const char* kManifestAccept =
    "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";
constexpr unsigned kMaxTokenFetches = 8;  // per image; a token server that never satisfies the registry

void curl_init_once() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

struct Call {
    CURL* h = nullptr;
    ByteSink* sink = nullptr;
    uint64_t max = 0;
    uint64_t got = 0;
    bool too_big = false;
    std::exception_ptr err;
    std::string www_authenticate, content_type;
    std::string error_body;  // first bytes of a non-2xx body, for nothing but discarding
    const OciFetchOptions* opts = nullptr;
};

long status_of(CURL* h) {
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    return code;
}

size_t on_header(char* p, size_t size, size_t n, void* ud) {
    auto* c = static_cast<Call*>(ud);
    std::string_view line(p, size * n);
    if (line.starts_with("HTTP/")) {  // a new response (after a redirect): forget the last one's
        c->www_authenticate.clear();
        c->content_type.clear();
    }
    auto value = [&](std::string_view name) -> std::optional<std::string> {
        if (line.size() <= name.size() || line[name.size()] != ':') return std::nullopt;
        for (size_t i = 0; i < name.size(); i++)
            if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return std::nullopt;
        std::string_view v = line.substr(name.size() + 1);
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
        while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.remove_suffix(1);
        return std::string(v.substr(0, 8192));
    };
    if (auto v = value("www-authenticate")) c->www_authenticate = *v;
    if (auto v = value("content-type")) c->content_type = *v;
    return size * n;
}

size_t on_data(char* p, size_t size, size_t n, void* ud) {
    auto* c = static_cast<Call*>(ud);
    size_t len = size * n;
    long code = status_of(c->h);
    if (code < 200 || code >= 300) {
        if (c->error_body.size() < 4096) c->error_body.append(p, std::min<size_t>(len, 4096));
        return len;
    }
    if (c->got + len > c->max) {
        c->too_big = true;
        return 0;
    }
    try {
        c->sink->write(p, len);
    } catch (...) {
        c->err = std::current_exception();
        return 0;
    }
    c->got += len;
    return len;
}

int on_progress(void* ud, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto* c = static_cast<Call*>(ud);
    if (c->opts->cancel && c->opts->cancel->load()) return 1;
    if (c->opts->abort && c->opts->abort->load()) return 1;
    return 0;
}

class StringSink final : public ByteSink {
public:
    std::string s;
    void write(const void* b, size_t n) override { s.append(static_cast<const char*>(b), n); }
};

std::string url_escape(const std::string& s) {
    std::string o;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            o += static_cast<char>(c);
        } else {
            char b[4];
            snprintf(b, sizeof b, "%%%02X", c);
            o += b;
        }
    }
    return o;
}

// The options every request shares: its URL, no signals, the connect and stall bounds, and the
// callbacks that stream into call.sink and watch for cancellation.
void set_common_options(CURL* h, const std::string& url, Call& call, char* errbuf) {
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, static_cast<long>(call.opts->connect_timeout_sec));
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, static_cast<long>(call.opts->stall_timeout_sec));
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &call);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &call);
}

}  // namespace

OciRegistryClient::OciRegistryClient(OciRegistry registry, std::string repository, OciFetchOptions opts)
    : registry_(std::move(registry)), repository_(std::move(repository)), opts_(opts) {
    base_ = std::string(registry_.insecure ? "http://" : "https://") + registry_.endpoint + "/v2/" + repository_ + "/";
}

std::string OciRegistryClient::get_token(const OciBearerChallenge& ch) {
    std::string url = ch.realm;
    char sep = url.find('?') == std::string::npos ? '?' : '&';
    if (!ch.service.empty()) {
        url += sep + std::string("service=") + url_escape(ch.service);
        sep = '&';
    }
    // The scope we need, whatever the challenge suggests (a registry naming another repository's
    // scope must not make us fetch a token for that one).
    url += sep + std::string("scope=") + url_escape("repository:" + repository_ + ":pull");
    curl_init_once();
    std::unique_ptr<CURL, CurlDeleter> c(curl_easy_init());
    if (!c) throw_errno(ENOMEM, "curl_easy_init");
    StringSink sink;
    Call call;
    call.h = c.get();
    call.sink = &sink;
    call.max = 1 << 20;
    call.opts = &opts_;
    CURL* h = c.get();
    char errbuf[CURL_ERROR_SIZE] = {};
    set_common_options(h, url, call, errbuf);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    CURLcode r = curl_easy_perform(h);
    if (r == CURLE_ABORTED_BY_CALLBACK) throw_errno(ECANCELED, "transfer cancelled");
    if (r != CURLE_OK)
        throw_errno(EIO, "cannot get a token from " + ch.realm + ": " + (errbuf[0] ? errbuf : curl_easy_strerror(r)));
    long code = status_of(h);
    if (code != 200)
        throw_errno(EACCES, "the token server " + ch.realm + " refused a token (HTTP " + std::to_string(code) + ")");
    return parse_oci_token_reply(sink.s);
}

void OciRegistryClient::fetch(const std::string& url, ByteSink& sink, uint64_t max, const char* accept,
                              std::string* content_type) {
    curl_init_once();
    bool retried = false;
    while (true) {
        std::unique_ptr<CURL, CurlDeleter> c(curl_easy_init());
        if (!c) throw_errno(ENOMEM, "curl_easy_init");
        CURL* h = c.get();
        std::unique_ptr<curl_slist, SlistDeleter> headers;
        auto add = [&](const std::string& s) {
            curl_slist* l = curl_slist_append(headers.get(), s.c_str());
            if (!l) throw_errno(ENOMEM, "curl_slist_append");
            (void)headers.release();
            headers.reset(l);
        };
        if (accept) add(accept);
        {
            std::lock_guard lk(token_mutex_);
            // curl drops a custom Authorization header when a redirect leads to another host
            // (blob storage), so the token never leaves the registry.
            if (!token_.empty()) add("Authorization: Bearer " + token_);
        }
        Call call;
        call.h = h;
        call.sink = &sink;
        call.max = max;
        call.opts = &opts_;
        char errbuf[CURL_ERROR_SIZE] = {};
        set_common_options(h, url, call, errbuf);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "machkit-transfer/" MK_VERSION);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &call);
        CURLcode r = curl_easy_perform(h);
        if (call.err) std::rethrow_exception(call.err);
        std::string detail = errbuf[0] ? errbuf : curl_easy_strerror(r);
        switch (r) {
        case CURLE_OK: break;
        case CURLE_ABORTED_BY_CALLBACK:
            if (opts_.cancel && opts_.cancel->load()) throw_errno(ECANCELED, "transfer cancelled");
            throw_errno(ECANCELED, "download of " + url + " stopped (another download failed)");
        case CURLE_WRITE_ERROR:
            if (call.too_big) throw_errno(EFBIG, url + " is larger than the " + std::to_string(max) + " bytes expected");
            throw_errno(EIO, "download of " + url + " failed: " + detail);
        case CURLE_TOO_MANY_REDIRECTS: throw_errno(ELOOP, "too many redirects for " + url);
        case CURLE_OPERATION_TIMEDOUT:
            throw_errno(ETIMEDOUT,
                        "the registry stalled (no data for " + std::to_string(opts_.stall_timeout_sec) + "s) on " + url);
        case CURLE_COULDNT_CONNECT: throw_errno(ECONNREFUSED, "cannot connect to " + registry_.endpoint + ": " + detail);
        case CURLE_COULDNT_RESOLVE_HOST: throw_errno(EHOSTUNREACH, "cannot resolve " + registry_.endpoint);
        case CURLE_UNSUPPORTED_PROTOCOL: throw UsageError("redirect to an unsupported protocol refused for " + url);
        default: throw_errno(EIO, "download of " + url + " failed: " + detail);
        }
        long code = status_of(h);
        if (code == 401) {
            auto ch = parse_www_authenticate(call.www_authenticate);
            if (!ch)
                throw_errno(EACCES, "the registry refused access to " + url + " (HTTP 401, no usable Bearer challenge)");
            if (retried) throw_errno(EACCES, "the registry refused access to " + url + " even with a token (HTTP 401)");
            std::string tok;
            {
                std::lock_guard lk(token_mutex_);
                if (++token_fetches_ > kMaxTokenFetches)
                    throw_errno(EACCES, "the registry keeps asking for authentication (HTTP 401), giving up");
            }
            tok = get_token(*ch);
            {
                std::lock_guard lk(token_mutex_);
                token_ = tok;
            }
            retried = true;
            continue;
        }
        if (code == 404) throw_errno(ENOENT, "not found on the registry: " + url);
        if (code < 200 || code >= 300)
            throw_errno(EIO, "the registry returned HTTP " + std::to_string(code) + " for " + url);
        if (content_type) *content_type = call.content_type;
        return;
    }
}

std::string OciRegistryClient::token() {
    std::lock_guard lk(token_mutex_);
    return token_;
}

void OciRegistryClient::set_token(std::string t) {
    std::lock_guard lk(token_mutex_);
    token_ = std::move(t);
}

std::string OciRegistryClient::get_manifest(const std::string& ref, std::string* content_type) {
    StringSink s;
    fetch(base_ + "manifests/" + ref, s, kOciManifestMax, kManifestAccept, content_type);
    return std::move(s.s);
}

std::string OciRegistryClient::get_small_blob(const OciDescriptor& d) {
    if (d.size > kOciManifestMax) throw_errno(EFBIG, "blob " + d.digest + " is larger than 4 MiB");
    StringSink s;
    fetch(base_ + "blobs/" + d.digest, s, d.size, nullptr, nullptr);
    if (s.s.size() != d.size || "sha256:" + sha256_hex(s.s) != d.digest)
        throw_errno(EBADMSG, "digest mismatch for blob " + d.digest + " from " + base_);
    return std::move(s.s);
}

void OciRegistryClient::stream_blob(const OciDescriptor& d, ByteSink& sink) {
    fetch(base_ + "blobs/" + d.digest, sink, d.size, nullptr, nullptr);
}

}  // namespace mk::core
