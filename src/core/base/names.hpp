// Naming rules shared by spawn, machd and machctl: machine names (systemd's hostname rules),
// image names, and the escapings used for unit names and D-Bus object paths.
// Pure functions, no side effects, thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mk::core {

inline constexpr size_t kHostNameMax = 64;

// systemd's hostname_is_valid(name, 0): [A-Za-z0-9-.], dot-separated labels that neither start nor
// end with '-', no empty label, <= 64 bytes, and not the reserved ".host".
bool machine_name_is_valid(std::string_view name);

// systemd's image_name_is_valid(): a valid file name (1..255 bytes, no '/', not "." or ".."),
// no control characters, valid UTF-8, and not starting with ".#" (temporary files).
bool image_name_is_valid(std::string_view name);

// Derives a machine name from a directory or image path the way nspawn does: the last path
// component with ".raw" stripped, cleaned to hostname characters. Empty if nothing valid remains.
std::string machine_name_from_path(std::string_view path);

// systemd's unit_name_escape(): '/' -> '-', everything but [A-Za-z0-9:_.] (and a leading '.')
// as \xNN. Injective, so two machine names never share a scope.
std::string unit_name_escape(std::string_view s);

// "machine-<escaped>.scope" as machined names the scope of machine `name`.
std::string machine_scope_name(std::string_view name);

// systemd's bus_label_escape(): everything but letters (and digits after the first byte) as _xx.
std::string bus_label_escape(std::string_view s);
// The same, appended to `out` (no allocation once `out` has room).
void append_bus_label(std::string& out, std::string_view s);
std::optional<std::string> bus_label_unescape(std::string_view s);

bool utf8_is_valid(std::string_view s);

}  // namespace mk::core
