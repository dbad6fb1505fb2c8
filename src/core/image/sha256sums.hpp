// SHA256SUMS / NAME.sha256 files: the checksum list published next to an image. Untrusted input
// (it comes from the same server as the image): the parser is strict, bounded and fuzzed.
//
// A line counts only when it *starts* with 64 hex digits followed by "  NAME" (text mode) or
// " *NAME" (binary mode), as sha256sum writes it (T-34). CR before LF is tolerated. Other lines are
// ignored (a clear-signed header, comments), so a hash placed mid-line never matches. The same
// name listed twice with different hashes is an error. Pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mk::core {

inline constexpr size_t kSha256SumsMax = 1 << 20;  // systemd's cap on checksum files

// The lowercase hex SHA-256 of `name` listed in `text`, or nullopt with the reason in *why (not
// listed, listed twice differently, file too large, name invalid).
std::optional<std::string> sha256sums_lookup(std::string_view text, std::string_view name, std::string* why = nullptr);

// Incremental SHA-256 (OpenSSL EVP underneath).
class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(const void* data, size_t n);
    std::string hex();  // finishes; lowercase

private:
    void* ctx_;
};

std::string sha256_hex(std::string_view data);

}  // namespace mk::core
