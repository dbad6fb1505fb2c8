// libFuzzer target for the parsers machd runs on files other programs (or guests) control:
// state files (/run/systemd/machines/NAME), os-release (from the guest), /proc/PID/cgroup,
// uid_map/gid_map and passwd (from the guest). Any crash, leak or sanitizer report is a bug.
// Build: CXX=clang++ meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz
// Run:   build-fuzz/tests/fuzz/fuzz-machine-parsers -max_total_time=60 tests/fuzz/corpus/machine_parsers/machine_parsers
// (60 s here: ~440,000 runs, no finding.)
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/kernel/cgroup.hpp"
#include "core/machine/inspect.hpp"
#include "core/machine/shell.hpp"
#include "core/machine/state_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    if (auto m = mk::core::parse_state_file("fuzz", text)) {
        // Whatever parses must format and parse back to the same fields.
        auto again = mk::core::parse_state_file("fuzz", mk::core::format_state_file(*m));
        if (!again || again->unit != m->unit || again->root_directory != m->root_directory || again->service != m->service ||
            again->leader != m->leader || again->netif != m->netif)
            __builtin_trap();
    }
    (void)mk::core::cunescape(text);
    if (mk::core::cunescape(mk::core::cescape(text)) != text) __builtin_trap();
    (void)mk::core::parse_os_release(text);
    if (auto p = mk::core::cgroup_path_from_proc(text)) (void)mk::core::unit_from_cgroup_path(*p);
    (void)mk::core::slice_to_path(text);
    (void)mk::core::parse_id_map(text);
    (void)mk::core::find_passwd_entry(text, "root");
    return 0;
}
