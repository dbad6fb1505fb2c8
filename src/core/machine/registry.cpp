#include "core/machine/registry.hpp"

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "core/base/names.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::core {

void Registry::check_can_add(std::string_view name, pid_t leader) const {
    if (!machine_name_is_valid(name)) throw_machine_error(MachineErrc::invalid_argument, "Invalid machine name");
    if (machines_.contains(name))
        throw_machine_error(MachineErrc::machine_exists, "Machine '" + std::string(name) + "' already exists");
    // machined 252 answers this with EEXIST from its leader hashmap (org.freedesktop.DBus.Error.FileExists).
    if (leader > 0 && by_leader_.contains(leader))
        throw std::system_error(
            EEXIST, std::generic_category(),
            "Leader PID " + std::to_string(leader) + " already belongs to machine " + by_leader_.at(leader)->name);
    if (machines_.size() >= max_)
        throw_machine_error(MachineErrc::too_many_machines, "Too many machines (at most " + std::to_string(max_) + ")");
}

Machine& Registry::add(Machine m) {
    check_can_add(m.name, m.leader);
    auto owned = std::make_unique<Machine>(std::move(m));
    Machine* p = owned.get();
    machines_.emplace(p->name, std::move(owned));
    insert_ordered(p);
    if (p->leader > 0) by_leader_[p->leader] = p;
    if (!p->unit.empty()) by_unit_[p->unit] = p;
    return *p;
}

Machine& Registry::add_unchecked(Machine m) {
    auto owned = std::make_unique<Machine>(std::move(m));
    Machine* p = owned.get();
    machines_.emplace(p->name, std::move(owned));
    insert_ordered(p);
    return *p;
}

Machine* Registry::find(std::string_view name) const {
    auto it = machines_.find(name);
    return it == machines_.end() ? nullptr : it->second.get();
}

Machine* Registry::find_by_leader(pid_t pid) const {
    auto it = by_leader_.find(pid);
    return it == by_leader_.end() ? nullptr : it->second;
}

Machine* Registry::find_by_unit(std::string_view unit) const {
    auto it = by_unit_.find(std::string(unit));
    return it == by_unit_.end() ? nullptr : it->second;
}

std::unique_ptr<Machine> Registry::remove(std::string_view name) {
    auto it = machines_.find(name);
    if (it == machines_.end()) return nullptr;
    auto owned = std::move(it->second);
    machines_.erase(it);
    std::erase(ordered_, owned.get());
    if (auto l = by_leader_.find(owned->leader); l != by_leader_.end() && l->second == owned.get()) by_leader_.erase(l);
    if (auto u = by_unit_.find(owned->unit); u != by_unit_.end() && u->second == owned.get()) by_unit_.erase(u);
    return owned;
}

void Registry::insert_ordered(Machine* m) {
    auto at = std::lower_bound(ordered_.begin(), ordered_.end(), m,
                               [](const Machine* a, const Machine* b) { return a->name < b->name; });
    ordered_.insert(at, m);
}

}  // namespace mk::core
