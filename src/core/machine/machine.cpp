#include "core/machine/machine.hpp"

#include <time.h>

#include "core/base/string_table.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::core {
namespace {

class MachineCategory : public std::error_category {
public:
    const char* name() const noexcept override { return "mk.machine"; }
    std::string message(int ev) const override {
        switch (static_cast<MachineErrc>(ev)) {
        case MachineErrc::no_such_machine: return "No such machine";
        case MachineErrc::machine_exists: return "Machine exists";
        case MachineErrc::no_machine_for_pid: return "No machine for PID";
        case MachineErrc::too_many_machines: return "Too many machines";
        case MachineErrc::invalid_argument: return "Invalid argument";
        case MachineErrc::not_supported: return "Not supported";
        case MachineErrc::no_private_networking: return "No private networking";
        case MachineErrc::no_such_user_mapping: return "No such user mapping";
        case MachineErrc::no_such_group_mapping: return "No such group mapping";
        }
        return "Unknown machine error";
    }
};

uint64_t now_usec(clockid_t clock) {
    timespec ts{};
    clock_gettime(clock, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

// "" is machined's spelling of an unknown class.
constexpr std::array<EnumName<MachineClass>, 4> kMachineClassNames{{
    {MachineClass::container, "container"}, {MachineClass::vm, "vm"}, {MachineClass::host, "host"},
    {MachineClass::unknown, ""}}};
constexpr std::array<EnumName<MachineState>, 3> kMachineStateNames{{
    {MachineState::opening, "opening"}, {MachineState::running, "running"}, {MachineState::closing, "closing"}}};

}  // namespace

const std::error_category& machine_category() noexcept {
    static const MachineCategory category;
    return category;
}

void throw_machine_error(MachineErrc e, const std::string& message) {
    // what() of a system_error appends ": <category message>"; keep the caller's text the whole message.
    throw std::system_error(make_error_code(e), message);
}

std::string_view to_string(MachineClass c) { return enum_to_string(kMachineClassNames, c, ""); }

std::optional<MachineClass> machine_class_from_string(std::string_view s) {
    return enum_from_string(kMachineClassNames, s);
}

std::string_view to_string(MachineState s) { return enum_to_string(kMachineStateNames, s, ""); }

bool Machine::has_id() const noexcept {
    for (auto b : id)
        if (b) return true;
    return false;
}

std::string id_to_string(const MachineId& id) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string s;
    s.reserve(32);
    for (auto b : id) {
        s += hex[b >> 4];
        s += hex[b & 15];
    }
    return s;
}

std::optional<MachineId> id_from_string(std::string_view s) {
    if (s.size() != 32) return std::nullopt;
    auto nib = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    MachineId id{};
    for (size_t i = 0; i < 16; i++) {
        int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        id[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return id;
}

uint64_t now_realtime_usec() { return now_usec(CLOCK_REALTIME); }
uint64_t now_monotonic_usec() { return now_usec(CLOCK_MONOTONIC); }

}  // namespace mk::core
