// Every D-Bus well-known name, object path, interface and error name machkit serves or calls,
// declared once (they were spelled out in six places). Plain constants with no sdbus-c++ in them,
// so machctl and tests can compare against them too. Thread-safe.
#pragma once

namespace mk::bus {

// org.freedesktop.machine1 (machined 252)
inline constexpr const char* kBusName = "org.freedesktop.machine1";
inline constexpr const char* kManagerPath = "/org/freedesktop/machine1";
inline constexpr const char* kMachinePathPrefix = "/org/freedesktop/machine1/machine";
inline constexpr const char* kImagePathPrefix = "/org/freedesktop/machine1/image";
inline constexpr const char* kManagerInterface = "org.freedesktop.machine1.Manager";
inline constexpr const char* kMachineInterface = "org.freedesktop.machine1.Machine";
inline constexpr const char* kImageInterface = "org.freedesktop.machine1.Image";
// machkit's own extension of the manager object (docs/dbus-api.md)
inline constexpr const char* kExtensionInterface = "io.machkit.Manager1";

// org.freedesktop.import1 (importd 252)
inline constexpr const char* kImportBusName = "org.freedesktop.import1";
inline constexpr const char* kImportManagerPath = "/org/freedesktop/import1";
inline constexpr const char* kImportManagerInterface = "org.freedesktop.import1.Manager";
inline constexpr const char* kImportTransferInterface = "org.freedesktop.import1.Transfer";

// Peers we call
inline constexpr const char* kSystemdBusName = "org.freedesktop.systemd1";
inline constexpr const char* kSystemdPath = "/org/freedesktop/systemd1";
inline constexpr const char* kDBusBusName = "org.freedesktop.DBus";
inline constexpr const char* kDBusPath = "/org/freedesktop/DBus";
inline constexpr const char* kDBusInterface = "org.freedesktop.DBus";
inline constexpr const char* kPropertiesInterface = "org.freedesktop.DBus.Properties";
inline constexpr const char* kSystemdManagerInterface = "org.freedesktop.systemd1.Manager";

// Error names
inline constexpr const char* kNoSuchMachine = "org.freedesktop.machine1.NoSuchMachine";
inline constexpr const char* kNoSuchImage = "org.freedesktop.machine1.NoSuchImage";
inline constexpr const char* kMachineExists = "org.freedesktop.machine1.MachineExists";
inline constexpr const char* kNoMachineForPID = "org.freedesktop.machine1.NoMachineForPID";
inline constexpr const char* kNoPrivateNetworking = "org.freedesktop.machine1.NoPrivateNetworking";
inline constexpr const char* kNoSuchUserMapping = "org.freedesktop.machine1.NoSuchUserMapping";
inline constexpr const char* kNoSuchGroupMapping = "org.freedesktop.machine1.NoSuchGroupMapping";
inline constexpr const char* kTransferInProgress = "org.freedesktop.import1.TransferInProgress";
inline constexpr const char* kNoSuchTransfer = "org.freedesktop.import1.NoSuchTransfer";
inline constexpr const char* kInvalidArgs = "org.freedesktop.DBus.Error.InvalidArgs";
inline constexpr const char* kAccessDenied = "org.freedesktop.DBus.Error.AccessDenied";
inline constexpr const char* kNotSupported = "org.freedesktop.DBus.Error.NotSupported";
inline constexpr const char* kLimitsExceeded = "org.freedesktop.DBus.Error.LimitsExceeded";
inline constexpr const char* kFailed = "org.freedesktop.DBus.Error.Failed";
inline constexpr const char* kUnknownMethod = "org.freedesktop.DBus.Error.UnknownMethod";
inline constexpr const char* kUnknownInterface = "org.freedesktop.DBus.Error.UnknownInterface";
inline constexpr const char* kUnknownObject = "org.freedesktop.DBus.Error.UnknownObject";
inline constexpr const char* kServiceUnknown = "org.freedesktop.DBus.Error.ServiceUnknown";
inline constexpr const char* kNameHasNoOwner = "org.freedesktop.DBus.Error.NameHasNoOwner";
inline constexpr const char* kSystemdJobFailed = "org.freedesktop.systemd1.JobFailed";
inline constexpr const char* kSystemdNoSuchUnit = "org.freedesktop.systemd1.NoSuchUnit";

}  // namespace mk::bus
