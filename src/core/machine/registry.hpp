// Registry: the set of machines machd knows, indexed by name, leader PID and unit.
// Owns the Machine objects (pointers stay valid until remove()). Thread-hostile: machd is
// single-threaded and that is what makes "two registrations of one name, exactly one wins" hold.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/machine/machine.hpp"

namespace mk::core {

inline constexpr size_t kMachinesMax = 4096;

class Registry {
public:
    explicit Registry(size_t max_machines = kMachinesMax) : max_(max_machines) {}

    // Takes ownership. Throws MachineErrc::machine_exists if the name (or the leader PID) is taken,
    // ::too_many_machines past the bound, ::invalid_argument for an invalid name.
    Machine& add(Machine m);

    // For ".host" only: no name check, not in the leader or unit index (machined does not look the
    // host up by PID).
    Machine& add_unchecked(Machine m);

    // Checks that add() would succeed, without adding (validation before side effects).
    void check_can_add(std::string_view name, pid_t leader) const;

    [[nodiscard]] Machine* find(std::string_view name) const;
    [[nodiscard]] Machine* find_by_leader(pid_t pid) const;
    [[nodiscard]] Machine* find_by_unit(std::string_view unit) const;

    // Removes and returns the machine; nullptr if unknown.
    std::unique_ptr<Machine> remove(std::string_view name);

    // Name order, stable for ListMachines.
    [[nodiscard]] std::vector<Machine*> all() const { return ordered_; }
    [[nodiscard]] size_t size() const noexcept { return machines_.size(); }

private:
    void insert_ordered(Machine* m);

    size_t max_;
    std::map<std::string, std::unique_ptr<Machine>, std::less<>> machines_;
    // machines_ in name order as a flat array, kept on add and remove: walking the map's 1,000 nodes
    // per listing cost a cache miss each, a fifth of machd's CPU per List or ListMachines (perf).
    std::vector<Machine*> ordered_;
    std::unordered_map<pid_t, Machine*> by_leader_;
    std::unordered_map<std::string, Machine*> by_unit_;
};

}  // namespace mk::core
