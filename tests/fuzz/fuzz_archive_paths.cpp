// libFuzzer target: the archive entry name rules (T-28, B-20). Invariants: an accepted name
// normalises to a relative path with no "", "." or ".." component, within the limits, and
// normalising it again is the identity.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/image/archive.hpp"

using namespace mk::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view s(reinterpret_cast<const char*>(data), size);
    ArchivePathLimits lim;
    lim.max_depth = 16;  // small limits so the fuzzer reaches them
    lim.max_name = 32;
    lim.max_path = 256;
    std::string why;
    auto n = normalize_archive_path(s, lim, &why);
    if (!n) {
        if (why.empty()) abort();
        return 0;
    }
    if (!s.empty() && s.front() == '/') abort();
    if (n->size() > s.size()) abort();
    if (!n->empty() && (n->front() == '/' || n->back() == '/')) abort();
    if (n->find('\0') != std::string::npos) abort();
    size_t depth = 0, start = 0;
    while (!n->empty() && start <= n->size()) {
        size_t end = n->find('/', start);
        if (end == std::string::npos) end = n->size();
        std::string_view c = std::string_view(*n).substr(start, end - start);
        if (c.empty() || c == "." || c == ".." || c.size() > lim.max_name) abort();
        depth++;
        start = end + 1;
    }
    if (depth > lim.max_depth) abort();
    auto again = normalize_archive_path(*n, lim);
    if (n->empty() ? again.has_value() : (!again || *again != *n)) abort();
    (void)archive_xattr_is_restored(s);
    return 0;
}
