// The interface descriptions machd serves through org.varlink.service.GetInterfaceDescription.
// They are systemd 262's own, byte for byte (idl/*.varlink, as sd_varlink_idl_format() prints
// them in systemd-machined 262), so that `varlinkctl introspect` of machd and of machined show no
// difference. tests/bus/test_varlink_conformance.py checks them against machined 262.
#pragma once

#include <string_view>

namespace mk::varlink::idl {

extern const std::string_view kOrgVarlinkService;
extern const std::string_view kIoSystemdMachine;
extern const std::string_view kIoSystemdMachineImage;

}  // namespace mk::varlink::idl
