#include "core/image/sha256sums.hpp"

#include <openssl/evp.h>

#include <stdexcept>

#include "core/base/strings.hpp"

namespace mk::core {

std::optional<std::string> sha256sums_lookup(std::string_view text, std::string_view name, std::string* why) {
    auto no = [&](std::string reason) -> std::optional<std::string> {
        if (why) *why = std::move(reason);
        return std::nullopt;
    };
    if (text.size() > kSha256SumsMax) return no("checksum file is larger than 1 MiB");
    if (name.empty() || name.size() > 255 || name.find('/') != std::string_view::npos || name == "." || name == "..")
        return no("invalid file name to look up");
    std::optional<std::string> found;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() < 64 + 2 + 1) continue;
        bool hex = true;
        for (size_t i = 0; i < 64; i++)
            if (hex_digit_value(line[i]) < 0) {
                hex = false;
                break;
            }
        if (!hex) continue;
        if (!((line[64] == ' ' && line[65] == ' ') || (line[64] == ' ' && line[65] == '*'))) continue;
        std::string_view listed = line.substr(66);
        if (listed != name) continue;
        std::string h(line.substr(0, 64));
        for (char& c : h)
            if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
        if (found && *found != h) return no("checksum file lists '" + std::string(name) + "' twice with different hashes");
        found = std::move(h);
    }
    if (!found) return no("checksum file has no entry for '" + std::string(name) + "'");
    return found;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("cannot initialise SHA-256");
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256::update(const void* data, size_t n) { EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, n); }

std::string Sha256::hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len);
    static const char d[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; i++) {
        out += d[md[i] >> 4];
        out += d[md[i] & 15];
    }
    return out;
}

std::string sha256_hex(std::string_view data) {
    Sha256 s;
    s.update(data.data(), data.size());
    return s.hex();
}

}  // namespace mk::core
