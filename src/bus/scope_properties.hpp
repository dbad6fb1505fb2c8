// CreateMachine's a(sv) scope properties -> core::ScopeProperties. Known properties are applied or
// accepted as systemd would take them; an unknown one is InvalidArgs, like systemd's
// "Cannot set property X, or unknown property." Pure.
#pragma once

#include <sdbus-c++/Types.h>

#include <string>
#include <vector>

#include "core/kernel/cgroup.hpp"

namespace mk::bus {

using ScopePropertyList = std::vector<sdbus::Struct<std::string, sdbus::Variant>>;

core::ScopeProperties parse_scope_properties(const ScopePropertyList& props);

}  // namespace mk::bus
