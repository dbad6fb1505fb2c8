// Typed reads of a call's parameters, as sd_varlink_dispatch() does them: a field of the wrong type,
// or one the method does not know, is org.varlink.service.InvalidParameter naming that field.
// Pure; thread-compatible.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "varlink/errors.hpp"
#include "varlink/protocol.hpp"

namespace mk::varlink {

class Params {
public:
    // Throws InvalidParameter for any key not in `known`.
    Params(const Json& parameters, std::initializer_list<std::string_view> known);

    // Absent or null -> nullopt.
    [[nodiscard]] std::optional<std::string> string(const char* key) const;
    [[nodiscard]] std::optional<bool> boolean(const char* key) const;
    // An integer within [min, max].
    [[nodiscard]] std::optional<int64_t> integer(const char* key, int64_t min, int64_t max) const;
    [[nodiscard]] std::optional<std::vector<std::string>> strings(const char* key) const;
    [[nodiscard]] std::optional<std::vector<int64_t>> integers(const char* key, int64_t min, int64_t max) const;
    // A ProcessId: a plain integer or {pid, pidfdId?, bootId?}. Returns pid and pidfdId (0 if absent).
    struct ProcessId {
        int64_t pid = 0;
        uint64_t pidfd_id = 0;
    };
    [[nodiscard]] std::optional<ProcessId> process_id(const char* key) const;
    // One of `values` (an IDL enum).
    [[nodiscard]] std::optional<std::string> enumeration(const char* key,
                                                         std::initializer_list<std::string_view> values) const;

    template <typename T>
    static T required(std::optional<T> v, const char* key) {
        if (!v) throw_invalid_parameter(key);
        return std::move(*v);
    }

private:
    const Json* get(const char* key) const;
    const Json& j_;
};

}  // namespace mk::varlink
