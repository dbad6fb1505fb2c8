// Client side of org.freedesktop.machine1 (+ io.machkit.Manager1) for machctl: plain C++ types in
// and out, so machctl itself never includes sdbus-c++. One connection to the system bus
// ($DBUS_SYSTEM_BUS_ADDRESS honoured) per MachineClient; blocking calls. Works against machd and
// systemd-machined alike (the extension methods only against machd). Thread-compatible.
// Errors: ClientError, whose kind separates "no bus" / "no machine manager" from the daemon's
// answer (then `name` is the D-Bus error name, e.g. org.freedesktop.machine1.NoSuchMachine).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bus/bus_target.hpp"

namespace mk::bus {

class ClientError : public std::runtime_error {
public:
    enum class Kind { no_bus, no_daemon, remote };
    ClientError(Kind kind, std::string name, const std::string& message)
        : std::runtime_error(message), kind(kind), name(std::move(name)) {}
    Kind kind;
    std::string name;  // D-Bus error name (remote), else the connection error's name
};

// A property value as D-Bus carried it. `signature` says which alternative is set.
using PropertyValue = std::variant<std::string, uint64_t, int64_t, bool, double, std::vector<uint8_t>, std::vector<int64_t>,
                                   std::vector<uint64_t>, std::vector<std::string>>;
struct Property {
    std::string name;
    std::string signature;
    PropertyValue value;
};

struct MachineEntry {
    std::string name, klass, service, path;
};

struct ImageEntry {
    std::string name, type;
    bool read_only = false;
    uint64_t crtime = 0, mtime = 0, usage = 0;
    std::string path;
};

struct Address {
    int family = 0;
    std::vector<uint8_t> bytes;
};

class MachineClient {
public:
    explicit MachineClient(const BusTarget& target = {});  // connects; throws ClientError(no_bus)
    ~MachineClient();
    MachineClient(const MachineClient&) = delete;
    MachineClient& operator=(const MachineClient&) = delete;

    std::vector<MachineEntry> list_machines();
    std::string machine_path(const std::string& name);
    // Properties of `iface` at `path` in machined 252's introspection order (then any others by
    // name): GetAll's own order is lost in sdbus-c++'s map, and differs between daemons anyway.
    std::vector<Property> properties(const std::string& path, const std::string& iface);
    std::vector<Address> addresses(const std::string& name);
    std::map<std::string, std::string> os_release(const std::string& name);

    void terminate(const std::string& name);
    void kill(const std::string& name, const std::string& who, int signal);
    std::pair<int, std::string> open_pty(const std::string& name);    // (owned master fd, path)
    std::pair<int, std::string> open_login(const std::string& name);  // (owned master fd, path)
    std::pair<int, std::string> open_shell(const std::string& name, const std::string& user, const std::string& path,
                                           const std::vector<std::string>& args, const std::vector<std::string>& env);
    void bind_mount(const std::string& name, const std::string& source, const std::string& dest, bool read_only, bool mkdir);
    // CopyTo/FromMachine[WithFlags] (flags != 0 uses the WithFlags variant; 1 = replace).
    void copy(bool to_machine, const std::string& name, const std::string& source, const std::string& dest, uint64_t flags);

    // io.machkit.Manager1 (machd only).
    int exec(const std::string& name, const std::string& user, const std::string& path, const std::vector<std::string>& args,
             const std::vector<std::string>& env, int in, int out, int err,
             bool tty);  // returns the owned status fd
    // StartMachine: (spawn's PID, its log file).
    std::pair<uint32_t, std::string> start_machine(const std::string& name);
    void pause(const std::string& name);
    void checkpoint_machine(const std::string& name, const std::string& directory, uint64_t flags);
    std::pair<uint32_t, std::string> restore_machine(const std::string& directory, const std::string& name,
                                                     uint64_t flags = 0);
    void resume(const std::string& name);
    // Waits until machine `name` is ready (io.machkit.Manager1: MachineReady, GetMachineReady),
    // including while it is not registered yet. timeout_usec 0 = no bound. Race-free: the signal
    // match exists from the constructor on, before the first query. Against a manager without the
    // extension (systemd-machined) it throws ClientError(remote, "...UnknownMethod"...).
    enum class ReadyWait { ready, not_registered, not_ready };  // not_*: the state at the deadline
    ReadyWait wait_ready(const std::string& name, uint64_t timeout_usec);

    // Images.
    std::vector<ImageEntry> list_images();
    std::string image_path(const std::string& name);
    std::map<std::string, std::string> image_os_release(const std::string& name);
    std::string image_hostname(const std::string& name);
    std::vector<uint8_t> image_machine_id(const std::string& name);  // empty when the image has none
    void remove_image(const std::string& name);
    void rename_image(const std::string& name, const std::string& new_name);
    void clone_image(const std::string& name, const std::string& new_name, bool read_only);
    void mark_image_read_only(const std::string& name, bool read_only);
    void set_pool_limit(uint64_t bytes);
    void set_image_limit(const std::string& name, uint64_t bytes);
    std::vector<std::pair<std::string, uint64_t>> clean_pool(const std::string& mode);

    // org.freedesktop.systemd1 (the host's service manager), for start: true if systemd owns its
    // name on this bus.
    bool systemd_present();
    void start_unit(const std::string& unit);  // StartUnit(unit, "replace"), waits for nothing
    // ActiveState of a loaded unit ("active", "activating", "failed", ...); "" if not loaded.
    std::string unit_active_state(const std::string& unit);
    // EnableUnitFiles(units, runtime=false, force=false) or DisableUnitFiles(units, false), as
    // machinectl enable/disable: the changes systemd made, each (type, file, destination).
    struct UnitFileChange {
        std::string type, file, destination;
    };
    std::vector<UnitFileChange> enable_unit_files(const std::vector<std::string>& units, bool enable);
    void reload_systemd();  // Reload: systemd reads the new links

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace mk::bus
