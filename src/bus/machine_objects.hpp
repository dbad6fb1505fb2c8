// The org.freedesktop.machine1 objects: the Manager at /org/freedesktop/machine1 and one Machine
// object per registered machine at /org/freedesktop/machine1/machine/<bus_label_escape(name)>.
// ManagerObject is the MachineService's listener: it creates/destroys Machine objects and emits
// MachineNew/MachineRemoved. Does not own the service or the connection. Thread-hostile (runs on
// machd's one loop).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <sdbus-c++/sdbus-c++.h>

#include "bus/event_loop.hpp"
#include "bus/image_objects.hpp"
#include "core/machine/copy.hpp"
#include "core/machine/service.hpp"
#include "Machine-adaptor.h"
#include "Manager-adaptor.h"

namespace mk::bus {

inline constexpr const char* kBusName = "org.freedesktop.machine1";
inline constexpr const char* kManagerPath = "/org/freedesktop/machine1";

std::string machine_object_path(std::string_view name);

class MachineObject;

// Copies run in helper children; the method replies when the child exits (bounded: 64 at once, as
// machined). Without a loop (set_loop not called) a copy completes synchronously.
class CopyOperations {
public:
    void set_loop(EventLoop* loop) { loop_ = loop; }
    void start(sdbus::IObject& obj, core::Machine& m, const std::string& source, const std::string& destination,
               bool to_machine, uint64_t flags, sdbus::Result<>&& result);

private:
    static constexpr size_t kMax = 64;
    EventLoop* loop_ = nullptr;
    std::map<int, std::pair<core::CopyOperation, sdbus::Result<>>> running_;  // by helper pidfd
};

class ManagerObject final : public sdbus::AdaptorInterfaces<org::freedesktop::machine1::Manager_adaptor,
                                                            sdbus::Properties_adaptor>,
                            public core::MachineService::Listener {
public:
    // `forward_scope_properties`: the scope backend is systemd, which takes CreateMachine's
    // properties verbatim (and validates them); otherwise machd parses them itself.
    ManagerObject(sdbus::IConnection& connection, core::MachineService& service, bool forward_scope_properties = false);
    ~ManagerObject() override;

    // Listener
    void machine_added(core::Machine& m) override;
    void machine_removed(const core::Machine& m) override;
    void machine_start_finished(core::Machine& m, const std::string& error) override;

    // Registers objects for machines that exist before the listener was attached (.host).
    void add_existing();
    // Lets long operations (copies) complete asynchronously on `loop`.
    void set_loop(EventLoop* loop) { copies_.set_loop(loop); }
    // Serves the image methods from `images` (NotSupported without).
    void set_images(ImageService* images) { images_ = images; }

private:
    core::Machine& lookup(const std::string& name);
    sdbus::ObjectPath create_or_register(const std::string& name, const std::vector<uint8_t>& id,
                                         const std::string& service, const std::string& klass, uint32_t leader,
                                         const std::string& root_directory, const std::vector<int32_t>& ifindices,
                                         bool create, const std::vector<sdbus::Struct<std::string, sdbus::Variant>>* props);

    // Manager_adaptor
    sdbus::ObjectPath GetMachine(const std::string& name) override;
    sdbus::ObjectPath GetImage(const std::string& name) override;
    sdbus::ObjectPath GetMachineByPID(const uint32_t& pid) override;
    std::vector<sdbus::Struct<std::string, std::string, std::string, sdbus::ObjectPath>> ListMachines() override;
    std::vector<sdbus::Struct<std::string, std::string, bool, uint64_t, uint64_t, uint64_t, sdbus::ObjectPath>> ListImages() override;
    void CreateMachine(sdbus::Result<sdbus::ObjectPath>&& result, std::string name, std::vector<uint8_t> id,
                       std::string service, std::string class_, uint32_t leader, std::string root_directory,
                       std::vector<sdbus::Struct<std::string, sdbus::Variant>> scope_properties) override;
    void CreateMachineWithNetwork(sdbus::Result<sdbus::ObjectPath>&& result, std::string name, std::vector<uint8_t> id,
                                  std::string service, std::string class_, uint32_t leader, std::string root_directory,
                                  std::vector<int32_t> ifindices,
                                  std::vector<sdbus::Struct<std::string, sdbus::Variant>> scope_properties) override;
    sdbus::ObjectPath RegisterMachine(const std::string& name, const std::vector<uint8_t>& id, const std::string& service,
                                      const std::string& class_, const uint32_t& leader,
                                      const std::string& root_directory) override;
    sdbus::ObjectPath RegisterMachineWithNetwork(const std::string& name, const std::vector<uint8_t>& id,
                                                 const std::string& service, const std::string& class_,
                                                 const uint32_t& leader, const std::string& root_directory,
                                                 const std::vector<int32_t>& ifindices) override;
    void UnregisterMachine(const std::string& name) override;
    void TerminateMachine(const std::string& id) override;
    void KillMachine(const std::string& name, const std::string& who, const int32_t& signal) override;
    std::vector<sdbus::Struct<int32_t, std::vector<uint8_t>>> GetMachineAddresses(const std::string& name) override;
    std::map<std::string, std::string> GetMachineOSRelease(const std::string& name) override;
    std::tuple<sdbus::UnixFd, std::string> OpenMachinePTY(const std::string& name) override;
    std::tuple<sdbus::UnixFd, std::string> OpenMachineLogin(const std::string& name) override;
    std::tuple<sdbus::UnixFd, std::string> OpenMachineShell(const std::string& name, const std::string& user,
                                                            const std::string& path, const std::vector<std::string>& args,
                                                            const std::vector<std::string>& environment) override;
    void BindMountMachine(const std::string& name, const std::string& source, const std::string& destination,
                          const bool& read_only, const bool& mkdir) override;
    void CopyFromMachine(sdbus::Result<>&& result, std::string name, std::string source, std::string destination) override;
    void CopyToMachine(sdbus::Result<>&& result, std::string name, std::string source, std::string destination) override;
    void CopyFromMachineWithFlags(sdbus::Result<>&& result, std::string name, std::string source,
                                  std::string destination, uint64_t flags) override;
    void CopyToMachineWithFlags(sdbus::Result<>&& result, std::string name, std::string source,
                                std::string destination, uint64_t flags) override;
    void copy(sdbus::Result<>&& result, const std::string& name, const std::string& source,
              const std::string& destination, bool to_machine, uint64_t flags);
    sdbus::UnixFd OpenMachineRootDirectory(const std::string& name) override;
    uint32_t GetMachineUIDShift(const std::string& name) override;
    void RemoveImage(const std::string& name) override;
    void RenameImage(const std::string& name, const std::string& new_name) override;
    void CloneImage(const std::string& name, const std::string& new_name, const bool& read_only) override;
    void MarkImageReadOnly(const std::string& name, const bool& read_only) override;
    std::string GetImageHostname(const std::string& name) override;
    std::vector<uint8_t> GetImageMachineID(const std::string& name) override;
    std::map<std::string, std::string> GetImageMachineInfo(const std::string& name) override;
    std::map<std::string, std::string> GetImageOSRelease(const std::string& name) override;
    void SetPoolLimit(const uint64_t& size) override;
    void SetImageLimit(const std::string& name, const uint64_t& size) override;
    std::vector<sdbus::Struct<std::string, uint64_t>> CleanPool(const std::string& mode) override;
    uint32_t MapFromMachineUser(const std::string& name, const uint32_t& uid_inner) override;
    std::tuple<std::string, sdbus::ObjectPath, uint32_t> MapToMachineUser(const uint32_t& uid_outer) override;
    uint32_t MapFromMachineGroup(const std::string& name, const uint32_t& gid_inner) override;
    std::tuple<std::string, sdbus::ObjectPath, uint32_t> MapToMachineGroup(const uint32_t& gid_outer) override;
    std::string PoolPath() override;
    uint64_t PoolUsage() override;
    uint64_t PoolLimit() override;

    std::tuple<std::string, sdbus::ObjectPath, uint32_t> map_to(uint32_t outer, bool group);
    void create_async(sdbus::Result<sdbus::ObjectPath>&& result, const std::string& name,
                      const std::function<sdbus::ObjectPath()>& create);

    sdbus::IConnection& connection_;
    core::MachineService& service_;
    bool forward_scope_properties_;
    CopyOperations copies_;
    ImageService* images_ = nullptr;
    ImageService& images();
    std::map<std::string, std::unique_ptr<MachineObject>> objects_;
    // CreateMachine calls waiting for their scope's start job (systemd backend), by machine name.
    std::map<std::string, sdbus::Result<sdbus::ObjectPath>> pending_;
};

// Shared by the Manager's *Machine(name, ...) methods and the Machine object's methods.
struct MachineOps {
    static void terminate(sdbus::IObject& obj, core::MachineService& svc, core::Machine& m);
    static void kill(sdbus::IObject& obj, core::MachineService& svc, core::Machine& m, const std::string& who, int32_t sig);
    static std::vector<sdbus::Struct<int32_t, std::vector<uint8_t>>> addresses(core::Machine& m);
    static std::map<std::string, std::string> os_release(core::Machine& m);
    static std::tuple<sdbus::UnixFd, std::string> open_pty(sdbus::IObject& obj, core::Machine& m);
    // A pty in the machine plus container-getty@N.service started on it by the guest's systemd
    // (machined's OpenLogin). Blocks for up to kGuestCallTimeout on the guest's bus.
    static std::tuple<sdbus::UnixFd, std::string> open_login(sdbus::IObject& obj, core::Machine& m);
    static sdbus::UnixFd open_root(sdbus::IObject& obj, core::Machine& m);
    static void bind_mount(sdbus::IObject& obj, core::Machine& m, const std::string& source,
                           const std::string& destination, bool read_only, bool mkdir);
    static std::tuple<sdbus::UnixFd, std::string> open_shell(sdbus::IObject& obj, core::MachineService& svc,
                                                             core::Machine& m, const std::string& user,
                                                             const std::string& path, const std::vector<std::string>& args,
                                                             const std::vector<std::string>& environment);
};

class MachineObject final : public sdbus::AdaptorInterfaces<org::freedesktop::machine1::Machine_adaptor,
                                                            sdbus::Properties_adaptor> {
public:
    MachineObject(sdbus::IConnection& connection, core::MachineService& service, core::Machine& machine,
                  CopyOperations& copies);
    ~MachineObject();

private:
    void Terminate() override;
    void Kill(const std::string& who, const int32_t& signal) override;
    std::vector<sdbus::Struct<int32_t, std::vector<uint8_t>>> GetAddresses() override;
    std::map<std::string, std::string> GetOSRelease() override;
    uint32_t GetUIDShift() override;
    std::tuple<sdbus::UnixFd, std::string> OpenPTY() override;
    std::tuple<sdbus::UnixFd, std::string> OpenLogin() override;
    std::tuple<sdbus::UnixFd, std::string> OpenShell(const std::string& user, const std::string& path,
                                                     const std::vector<std::string>& args,
                                                     const std::vector<std::string>& environment) override;
    void BindMount(const std::string& source, const std::string& destination, const bool& read_only,
                   const bool& mkdir) override;
    void CopyFrom(sdbus::Result<>&& result, std::string source, std::string destination) override;
    void CopyTo(sdbus::Result<>&& result, std::string source, std::string destination) override;
    void CopyFromWithFlags(sdbus::Result<>&& result, std::string source, std::string destination, uint64_t flags) override;
    void CopyToWithFlags(sdbus::Result<>&& result, std::string source, std::string destination, uint64_t flags) override;
    sdbus::UnixFd OpenRootDirectory() override;
    std::string Name() override;
    std::vector<uint8_t> Id() override;
    uint64_t Timestamp() override;
    uint64_t TimestampMonotonic() override;
    std::string Service() override;
    std::string Unit() override;
    uint32_t Leader() override;
    std::string Class() override;
    std::string RootDirectory() override;
    std::vector<int32_t> NetworkInterfaces() override;
    std::string State() override;

    core::MachineService& service_;
    core::Machine& machine_;
    CopyOperations& copies_;
};

}  // namespace mk::bus
