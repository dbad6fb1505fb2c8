// libFuzzer target: /etc/subuid parsing and the rootless ID map. Checks invariants, not just
// absence of crashes: every parsed range is valid for the kernel, and the planned map never maps an
// ID twice on either side, never exceeds the kernel's line limit or 65536 IDs.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/base/error.hpp"
#include "core/kernel/subid.hpp"

using namespace mk::core;

namespace {

bool overlap(uint64_t a, uint64_t an, uint64_t b, uint64_t bn) { return a < b + bn && b < a + an; }

void check_lines(const std::vector<MapLine>& lines) {
    if (lines.empty() || lines.size() > kMaxMapLines) abort();
    uint64_t total = 0;
    for (size_t i = 0; i < lines.size(); i++) {
        if (lines[i].count == 0) abort();
        total += lines[i].count;
        for (size_t j = 0; j < i; j++) {
            if (overlap(lines[i].inside, lines[i].count, lines[j].inside, lines[j].count)) abort();
            if (overlap(lines[i].outside, lines[i].count, lines[j].outside, lines[j].count)) abort();
        }
    }
    if (total > kRootlessMaxIds) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto entries = parse_subid_file(text);
    if (entries.size() > kSubidMaxEntries) abort();
    for (const auto& e : entries)
        if (e.owner.empty() || e.count == 0 || static_cast<uint64_t>(e.start) + e.count > UINT32_MAX) abort();
    // The first entry's owner as the user; its uid from the input's length, so both cases run.
    std::string name = entries.empty() ? "u" : entries.front().owner;
    uint32_t id = static_cast<uint32_t>(size * 7919);
    auto ranges = subid_ranges_for(entries, name, id);
    try {
        RootlessMap m = plan_rootless_map(name, id, id, ranges, ranges);
        check_lines(m.uid_lines);
        check_lines(m.gid_lines);
        if (m.uid_lines[0].inside != 0 || m.uid_lines[0].outside != id || m.uid_lines[0].count != 1) abort();
    } catch (const UsageError&) {
        // A range holding the user's own ID: refused, as it must be.
    }
    return 0;
}
