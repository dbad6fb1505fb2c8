// libFuzzer target: the SHA256SUMS parser (untrusted: served next to the image). Checks invariants:
// a hit is 64 lowercase hex digits, and it really is listed at the start of a line for that name.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/image/sha256sums.hpp"

using namespace mk::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    // First line of the input is the name to look up, the rest is the file.
    size_t nl = in.find('\n');
    std::string_view name = nl == std::string_view::npos ? std::string_view("image.tar.xz") : in.substr(0, nl);
    std::string_view text = nl == std::string_view::npos ? in : in.substr(nl + 1);
    for (std::string_view n : {name, std::string_view("image.tar.xz"), std::string_view("SHA256SUMS")}) {
        std::string why;
        auto h = sha256sums_lookup(text, n, &why);
        if (!h) {
            if (why.empty()) abort();
            continue;
        }
        if (h->size() != 64) abort();
        for (char c : *h)
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) abort();
        if (n.empty() || n.find('/') != std::string_view::npos) abort();
        // The name must appear in the text right after "  " or " *".
        std::string a = "  " + std::string(n), b = " *" + std::string(n);
        if (text.find(a) == std::string_view::npos && text.find(b) == std::string_view::npos) abort();
    }
    return 0;
}
