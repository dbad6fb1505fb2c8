// Enum <-> name tables, as systemd's string-table.h: one constexpr array per enum is the single
// place its spellings live, and both directions (and the "expected one of" list) come from it.
// Header-only and constexpr; thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mk::core {

template <typename E>
struct EnumName {
    E value;
    std::string_view name;
};

// The name of `v`, or `fallback` for a value the table lacks (a corrupt cast).
template <typename E, size_t N>
constexpr std::string_view enum_to_string(const std::array<EnumName<E>, N>& table, E v,
                                          std::string_view fallback = "invalid") {
    for (const auto& n : table)
        if (n.value == v) return n.name;
    return fallback;
}

// Exact, case-sensitive match; nullopt for anything else.
template <typename E, size_t N>
constexpr std::optional<E> enum_from_string(const std::array<EnumName<E>, N>& table, std::string_view s) {
    for (const auto& n : table)
        if (n.name == s) return n.value;
    return std::nullopt;
}

// "a, b, c": for "expected one of: ..." messages and help texts.
template <typename E, size_t N>
std::string enum_names(const std::array<EnumName<E>, N>& table, std::string_view separator = ", ") {
    std::string out;
    for (size_t i = 0; i < N; i++) {
        if (i) out += separator;
        out += table[i].name;
    }
    return out;
}

}  // namespace mk::core
