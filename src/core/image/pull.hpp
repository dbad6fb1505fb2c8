// Downloads over HTTP(S) with libcurl, and verification of what was downloaded against SHA256SUMS
// (or NAME.sha256) and, in signature mode, the detached SHA256SUMS.gpg checked by gpgv.
//
// Errors say which of these happened: interrupted (ECONNRESET), cancelled (ECANCELED), server
// error (ENOENT for 404, EIO otherwise), too large (EFBIG), checksum mismatch (EBADMSG), no
// keyring (ENOKEY), bad signature (EKEYREJECTED), disk full (ENOSPC, from the sink).
//
// Thread-compatible; http_* calls block. GpgVerifier forks its gpgv runner when constructed, so
// a sandboxed process can create it before it forbids exec for itself.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/unique_fd.hpp"
#include "core/image/compress.hpp"

namespace mk::core {

enum class VerifyMode { no, checksum, signature };
std::string_view to_string(VerifyMode m);
std::optional<VerifyMode> verify_mode_from_string(std::string_view s);

// http:// or https:// with a host, <= 4096 bytes, no control characters or spaces. Pure.
bool url_is_valid(std::string_view url);
// Last path component, without query or fragment ("" if none). Pure.
std::string url_last_component(std::string_view url);
// The URL with its last path component replaced by `file`. Pure.
std::string url_sibling(std::string_view url, std::string_view file);

struct HttpOptions {
    uint64_t max_bytes = uint64_t{64} << 30;
    std::function<void(uint64_t done, uint64_t total)> progress;  // total 0 when unknown
    const std::atomic<bool>* cancel = nullptr;
};

// Streams the body of `url` into `sink` (sink.finish() is not called). Follows up to 10
// redirects, http/https only. Stalls (< 30 B/s for 60 s) abort. Returns the byte count.
uint64_t http_download(const std::string& url, ByteSink& sink, const HttpOptions& opts = {});

// A small file (checksum list, signature): nullopt on HTTP 404, throws on other errors or when
// larger than `max`.
std::optional<std::string> http_get_small(const std::string& url, size_t max = 1 << 20,
                                          const std::atomic<bool>* cancel = nullptr);

// The keyring importd uses: /etc/systemd/import-pubring.gpg, else /usr/lib/systemd/import-pubring.gpg;
// "" when neither exists.
std::string default_keyring();

// Runs gpgv (never gpg with a user's home) in a child forked at construction time.
class GpgVerifier {
public:
    explicit GpgVerifier(std::string keyring);
    ~GpgVerifier();
    GpgVerifier(const GpgVerifier&) = delete;
    GpgVerifier& operator=(const GpgVerifier&) = delete;
    const std::string& keyring() const { return keyring_; }
    // Checks the detached signature `sig` over `data`. One call per verifier. Throws
    // EKEYREJECTED with gpgv's message when the signature does not verify.
    void verify(std::string_view data, std::string_view sig);

private:
    std::string keyring_;
    UniqueFd sock_;
    pid_t pid_ = -1;
};

// Checks the download of `url` whose SHA-256 is `sha256_hex`: fetches NAME.sha256 or, failing
// that, SHA256SUMS next to it; in signature mode SHA256SUMS plus SHA256SUMS.gpg verified by `gpg`
// (which must be non-null; construct it with default_keyring() and fail clearly if that is "").
void verify_download(const std::string& url, const std::string& sha256_hex, VerifyMode mode, GpgVerifier* gpg,
                     const std::function<void(const std::string&)>& log, const std::atomic<bool>* cancel = nullptr);

}  // namespace mk::core
