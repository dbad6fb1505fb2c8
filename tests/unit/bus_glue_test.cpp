// The pure parts of libmkbus: error translation and scope-property parsing. No bus connection.
#include <gtest/gtest.h>

#include <system_error>

#include "bus/errors.hpp"
#include "bus/import_objects.hpp"
#include "core/kernel/capabilities.hpp"
#include "bus/scope_properties.hpp"
#include "core/machine/machine_error.hpp"

using namespace mk;

namespace {

sdbus::Error translated(const std::function<void()>& f) {
    try {
        bus::translate([&] {
            f();
            return 0;
        });
    } catch (const sdbus::Error& e) {
        return e;
    }
    return sdbus::Error("none", "none");
}

bus::ScopePropertyList props(std::initializer_list<std::pair<std::string, sdbus::Variant>> l) {
    bus::ScopePropertyList out;
    for (const auto& [k, v] : l) out.emplace_back(k, v);
    return out;
}

}  // namespace

TEST(ErrorMap, MachineErrorsGetMachine1Names) {
    auto e = translated([] { core::throw_machine_error(core::MachineErrc::machine_exists, "Machine 'x' already exists"); });
    EXPECT_EQ(e.getName(), "org.freedesktop.machine1.MachineExists");
    EXPECT_EQ(e.getMessage(), "Machine 'x' already exists");
    EXPECT_EQ(translated([] { core::throw_machine_error(core::MachineErrc::no_such_machine, "m"); }).getName(),
              "org.freedesktop.machine1.NoSuchMachine");
    EXPECT_EQ(translated([] { core::throw_machine_error(core::MachineErrc::no_machine_for_pid, "m"); }).getName(),
              "org.freedesktop.machine1.NoMachineForPID");
    EXPECT_EQ(translated([] { core::throw_machine_error(core::MachineErrc::invalid_argument, "m"); }).getName(),
              "org.freedesktop.DBus.Error.InvalidArgs");
    EXPECT_EQ(translated([] { core::throw_machine_error(core::MachineErrc::not_supported, "m"); }).getName(),
              "org.freedesktop.DBus.Error.NotSupported");
    EXPECT_EQ(translated([] { core::throw_machine_error(core::MachineErrc::too_many_machines, "m"); }).getName(),
              "org.freedesktop.DBus.Error.LimitsExceeded");
    EXPECT_EQ(translated([] { core::throw_machine_error(core::MachineErrc::no_private_networking, "m"); }).getName(),
              "org.freedesktop.machine1.NoPrivateNetworking");
}

TEST(ErrorMap, ErrnoAsSdBusNamesIt) {
    EXPECT_EQ(bus::errno_to_bus_name(EINVAL), "org.freedesktop.DBus.Error.InvalidArgs");
    EXPECT_EQ(bus::errno_to_bus_name(EPERM), "org.freedesktop.DBus.Error.AccessDenied");
    EXPECT_EQ(bus::errno_to_bus_name(EACCES), "org.freedesktop.DBus.Error.AccessDenied");
    EXPECT_EQ(bus::errno_to_bus_name(ENXIO), "System.Error.ENXIO");
    auto e = translated([] { throw std::system_error(EBUSY, std::generic_category(), "rmdir x"); });
    EXPECT_EQ(e.getName(), "System.Error.EBUSY");
    EXPECT_NE(e.getMessage().find("rmdir x"), std::string::npos);
    EXPECT_EQ(translated([] { throw std::runtime_error("boom"); }).getName(), "org.freedesktop.DBus.Error.Failed");
    EXPECT_EQ(translated([] { throw sdbus::Error("a.b.C", "keep"); }).getName(), "a.b.C");
}

TEST(ScopeProperties, WhatNspawnSends) {
    auto p = bus::parse_scope_properties(props({
        {"Slice", sdbus::Variant(std::string("machine-foo.slice"))},
        {"Controller", sdbus::Variant(std::string(":1.42"))},
        {"DevicePolicy", sdbus::Variant(std::string("closed"))},
        {"DeviceAllow",
         sdbus::Variant(std::vector<sdbus::Struct<std::string, std::string>>{{"/dev/net/tun", "rwm"}, {"char-pts", "rw"}})},
        {"KillSignal", sdbus::Variant(int32_t{37})},
        {"KillMode", sdbus::Variant(std::string("mixed"))},
        {"MemoryMax", sdbus::Variant(uint64_t{1} << 30)},
        {"TasksMax", sdbus::Variant(uint64_t{512})},
        {"CPUWeight", sdbus::Variant(uint64_t{50})},
        {"CPUQuotaPerSecUSec", sdbus::Variant(uint64_t{250000})},
    }));
    EXPECT_EQ(p.slice, "machine-foo.slice");
    EXPECT_EQ(p.device_policy, "closed");
    ASSERT_EQ(p.device_allow.size(), 2u);
    EXPECT_EQ(p.device_allow[1].path, "char-pts");
    EXPECT_EQ(p.kill_signal, 37);
    EXPECT_EQ(p.memory_max, uint64_t{1} << 30);
    EXPECT_EQ(p.tasks_max, 512u);
    EXPECT_EQ(p.cpu_weight, 50u);
    EXPECT_EQ(p.cpu_quota_per_sec_usec, 250000u);
}

TEST(ScopeProperties, RejectsUnknownWrongTypeAndBadValues) {
    auto name_of = [](bus::ScopePropertyList l) {
        try {
            bus::parse_scope_properties(l);
        } catch (const sdbus::Error& e) {
            return e.getName();
        }
        return std::string("accepted");
    };
    const std::string invalid = "org.freedesktop.DBus.Error.InvalidArgs";
    EXPECT_EQ(name_of(props({{"Bogus", sdbus::Variant(std::string("x"))}})), invalid);
    EXPECT_EQ(name_of(props({{"TasksMax", sdbus::Variant(std::string("10"))}})), invalid);
    EXPECT_EQ(name_of(props({{"Slice", sdbus::Variant(std::string("../evil.slice"))}})), invalid);
    EXPECT_EQ(name_of(props({{"DevicePolicy", sdbus::Variant(std::string("open"))}})), invalid);
    EXPECT_EQ(name_of(props({{"CPUWeight", sdbus::Variant(uint64_t{0})}})), invalid);
    EXPECT_EQ(name_of(props({{"KillSignal", sdbus::Variant(int32_t{999})}})), invalid);
    EXPECT_EQ(
        name_of(props(
            {{"DeviceAllow", sdbus::Variant(std::vector<sdbus::Struct<std::string, std::string>>{{"/etc/passwd", "rw"}})}})),
        invalid);
    EXPECT_EQ(name_of(props({{"DeviceAllow",
                              sdbus::Variant(std::vector<sdbus::Struct<std::string, std::string>>{{"/dev/null", "rwx"}})}})),
              invalid);
    EXPECT_EQ(name_of(props({{"Delegate", sdbus::Variant(true)}, {"CollectMode", sdbus::Variant(std::string("x"))}})),
              "accepted");
}

namespace {
const sdbus::Variant* property(const mk::bus::ScopePropertyList& list, const std::string& name) {
    for (const auto& p : list)
        if (p.get<0>() == name) return &p.get<1>();
    return nullptr;
}
std::vector<std::string> families(const mk::bus::ScopePropertyList& list) {
    return property(list, "RestrictAddressFamilies")->get<sdbus::Struct<bool, std::vector<std::string>>>().get<1>();
}
}  // namespace

TEST(TransferUnit, NetworkOnlyForPulls) {
    for (const char* verb : {"import-tar", "import-raw", "import-fs", "export-tar", "export-raw"}) {
        auto p = mk::bus::transfer_unit_properties(verb, "/var/lib/machines");
        EXPECT_TRUE(property(p, "PrivateNetwork")->get<bool>()) << verb;
        EXPECT_EQ(families(p), std::vector<std::string>{"AF_UNIX"}) << verb;
    }
    for (const char* verb : {"pull-tar", "pull-raw"}) {
        auto p = mk::bus::transfer_unit_properties(verb, "/var/lib/machines");
        EXPECT_FALSE(property(p, "PrivateNetwork")->get<bool>()) << verb;
        EXPECT_EQ(families(p), (std::vector<std::string>{"AF_UNIX", "AF_INET", "AF_INET6"})) << verb;
    }
}

TEST(TransferUnit, WritesOnlyThePoolAndMakesDevicesOnlyForImportFs) {
    auto p = mk::bus::transfer_unit_properties("import-tar", "/srv/pool");
    EXPECT_EQ(property(p, "ProtectSystem")->get<std::string>(), "strict");
    EXPECT_EQ(property(p, "ReadWritePaths")->get<std::vector<std::string>>(), std::vector<std::string>{"/srv/pool"});
    EXPECT_TRUE(property(p, "NoNewPrivileges")->get<bool>());
    EXPECT_EQ(property(p, "RestrictNamespaces")->get<uint64_t>(), 0u);
    uint64_t caps = property(p, "CapabilityBoundingSet")->get<uint64_t>();
    EXPECT_FALSE(caps & (uint64_t{1} << CAP_MKNOD));
    EXPECT_FALSE(caps & (uint64_t{1} << CAP_SYS_ADMIN));
    EXPECT_TRUE(caps & (uint64_t{1} << CAP_SETPCAP));  // the helper drops its own bounding set
    EXPECT_TRUE(property(p, "PrivateDevices")->get<bool>());
    auto fs = mk::bus::transfer_unit_properties("import-fs", "/srv/pool");
    EXPECT_TRUE(property(fs, "CapabilityBoundingSet")->get<uint64_t>() & (uint64_t{1} << CAP_MKNOD));
    EXPECT_FALSE(property(fs, "PrivateDevices")->get<bool>());
}
