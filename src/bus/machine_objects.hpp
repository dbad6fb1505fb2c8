// The org.freedesktop.machine1 Manager at /org/freedesktop/machine1; it also serves the Machine
// objects (/org/freedesktop/machine1/machine/<bus_label_escape(name)>, bus/machine_nodes.hpp).
// ManagerObject is the MachineService's listener: it emits MachineNew/MachineRemoved and answers
// CreateMachine once the scope started. Does not own the service or the connection.
// Thread-hostile (runs on machd's one loop).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <sdbus-c++/sdbus-c++.h>

#include "bus/event_loop.hpp"
#include "bus/image_objects.hpp"
#include "bus/machine_nodes.hpp"
#include "bus/machine_ops.hpp"
#include "core/machine/service.hpp"
#include "Manager-adaptor.h"

namespace mk::bus {

class ManagerObject final
    : public sdbus::AdaptorInterfaces<org::freedesktop::machine1::Manager_adaptor, sdbus::Properties_adaptor>,
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

    // Lets long operations (copies) complete asynchronously on `loop`.
    void set_loop(EventLoop* loop) {
        copies_.set_loop(loop);
        logins_.set_loop(loop);
    }
    // The sd-bus connection underneath (for the PolkitGate's filter).
    sd_bus* bus() { return underlying_bus(getObject()); }
    // Serves the image methods from `images` (NotSupported without).
    void set_images(ImageService* images) { images_ = images; }
    // Shared with the Varlink front end: one bound on copies and one set of guest-bus calls for
    // both APIs.
    CopyOperations& copies() { return copies_; }
    GuestUnitStarts& logins() { return logins_; }

private:
    core::Machine& lookup(const std::string& name);
    sdbus::ObjectPath create_or_register(const std::string& name, const std::vector<uint8_t>& id, const std::string& service,
                                         const std::string& klass, uint32_t leader, const std::string& root_directory,
                                         const std::vector<int32_t>& ifindices, bool create,
                                         const std::vector<sdbus::Struct<std::string, sdbus::Variant>>* props);

    // Manager_adaptor
    sdbus::ObjectPath GetMachine(const std::string& name) override;
    sdbus::ObjectPath GetImage(const std::string& name) override;
    sdbus::ObjectPath GetMachineByPID(const uint32_t& pid) override;
    std::vector<sdbus::Struct<std::string, std::string, bool, uint64_t, uint64_t, uint64_t, sdbus::ObjectPath>> ListImages()
        override;
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
    void OpenMachineLogin(sdbus::Result<sdbus::UnixFd, std::string>&& result, std::string name) override;
    std::tuple<sdbus::UnixFd, std::string> OpenMachineShell(const std::string& name, const std::string& user,
                                                            const std::string& path, const std::vector<std::string>& args,
                                                            const std::vector<std::string>& environment) override;
    void BindMountMachine(const std::string& name, const std::string& source, const std::string& destination,
                          const bool& read_only, const bool& mkdir) override;
    void CopyFromMachine(sdbus::Result<>&& result, std::string name, std::string source, std::string destination) override;
    void CopyToMachine(sdbus::Result<>&& result, std::string name, std::string source, std::string destination) override;
    void CopyFromMachineWithFlags(sdbus::Result<>&& result, std::string name, std::string source, std::string destination,
                                  uint64_t flags) override;
    void CopyToMachineWithFlags(sdbus::Result<>&& result, std::string name, std::string source, std::string destination,
                                uint64_t flags) override;
    void copy(sdbus::Result<>&& result, const std::string& name, const std::string& source, const std::string& destination,
              bool to_machine, uint64_t flags);
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
    GuestUnitStarts logins_;
    ImageService* images_ = nullptr;
    ImageService& images();
    MachineNodes nodes_;
    // CreateMachine calls waiting for their scope's start job (systemd backend), by machine name.
    std::map<std::string, sdbus::Result<sdbus::ObjectPath>> pending_;
};

}  // namespace mk::bus
