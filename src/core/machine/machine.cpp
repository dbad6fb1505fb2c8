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
constexpr std::array<EnumName<MachineClass>, 4> kMachineClassNames{{{MachineClass::container, "container"},
                                                                    {MachineClass::vm, "vm"},
                                                                    {MachineClass::host, "host"},
                                                                    {MachineClass::unknown, ""}}};
constexpr std::array<EnumName<MachineState>, 3> kMachineStateNames{
    {{MachineState::opening, "opening"}, {MachineState::running, "running"}, {MachineState::closing, "closing"}}};

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

std::optional<MachineClass> machine_class_from_string(std::string_view s) { return enum_from_string(kMachineClassNames, s); }

std::string_view to_string(MachineState s) { return enum_to_string(kMachineStateNames, s, ""); }

bool Machine::has_id() const noexcept { return !id128_is_null(id); }

uint64_t now_realtime_usec() { return now_usec(CLOCK_REALTIME); }
uint64_t now_monotonic_usec() { return now_usec(CLOCK_MONOTONIC); }

}  // namespace mk::core
