// org.freedesktop.import1 (systemd 252 importd compatible): the Manager at /org/freedesktop/import1
// and one Transfer object per running transfer at /org/freedesktop/import1/transfer/_<id>. Each
// transfer is a machd-transfer process (docs/images.md): where systemd runs, a transient service of
// its own (machd-transfer-<id>.service) with a sandbox per verb, else a child of machd. machd never
// parses image data, it only relays the helper's progress pipe. Thread-hostile (machd's one loop).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <sdbus-c++/sdbus-c++.h>

#include "Import1Manager-adaptor.h"
#include "Import1Transfer-adaptor.h"
#include "bus/event_loop.hpp"
#include "bus/names.hpp"
#include "bus/scope_properties.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::bus {

class ImportManagerObject;

// The transient service's properties for one machd-transfer VERB writing to `pool`: no new
// privileges, the file system read-only but the pool, the helper's capabilities, no devices but for
// import-fs (which recreates device nodes), and a network only for pull-tar/pull-raw.
ScopePropertyList transfer_unit_properties(const std::string& verb, const std::string& pool);

// How transfers run as units: started with their argv and stdio, stopped to cancel.
struct TransferUnits {
    std::function<void(const std::string& unit, const std::vector<std::string>& argv, int stdin_fd, int stdout_fd,
                       int stderr_fd, const ScopePropertyList& properties)>
        start;
    std::function<void(const std::string& unit)> stop;
};

class TransferObject final
    : public sdbus::AdaptorInterfaces<org::freedesktop::import1::Transfer_adaptor, sdbus::Properties_adaptor> {
public:
    TransferObject(sdbus::IConnection& connection, ImportManagerObject& manager, uint32_t id, std::string type,
                   std::string local, std::string remote, std::string verify);
    ~TransferObject();

    std::string path() const;
    void cancel();  // SIGTERM to the helper, or a stop of its unit

    uint32_t id_;
    std::string type_, local_, remote_, verify_;
    double progress_ = 0;
    pid_t pid_ = -1;
    std::string unit_;  // machd-transfer-<id>.service where transfers run as units
    core::UniqueFd pidfd_;
    core::UniqueFd progress_fd_;
    std::string buffer_;
    bool done_ = false;
    bool canceled_ = false;
    std::string error_;

private:
    ImportManagerObject& manager_;
    void Cancel() override;
    uint32_t Id() override { return id_; }
    std::string Local() override { return local_; }
    std::string Remote() override { return remote_; }
    std::string Type() override { return type_; }
    std::string Verify() override { return verify_; }
    double Progress() override { return progress_; }
};

class ImportManagerObject final
    : public sdbus::AdaptorInterfaces<org::freedesktop::import1::Manager_adaptor, sdbus::Properties_adaptor> {
public:
    // `transfer_path`: the machd-transfer binary; `pool`: the image pool directory.
    ImportManagerObject(sdbus::IConnection& connection, EventLoop& loop, std::string transfer_path, std::string pool);
    ~ImportManagerObject();

    // Where systemd runs: every transfer from now on as a transient service (TransferUnits).
    void use_units(TransferUnits units) { units_ = std::move(units); }

    static constexpr size_t kTransfersMax = 64;

private:
    friend class TransferObject;
    using Reply = std::tuple<uint32_t, sdbus::ObjectPath>;
    Reply start(const std::string& type, const std::string& local, const std::string& remote, const std::string& verify,
                int client_fd, bool client_is_stdout, std::vector<std::string> args);
    Reply start_unit(const std::string& type, const std::string& local, const std::string& remote, const std::string& verify,
                     int client_fd, bool client_is_stdout, std::vector<std::string> argv, core::UniqueFd rd,
                     core::UniqueFd wr);
    Reply announce(TransferObject& t, bool client_is_stdout);
    bool read_progress(TransferObject& t);  // true at EOF
    void finished(uint32_t id);

    Reply ImportTar(const sdbus::UnixFd& fd, const std::string& local_name, const bool& force,
                    const bool& read_only) override;
    Reply ImportRaw(const sdbus::UnixFd& fd, const std::string& local_name, const bool& force,
                    const bool& read_only) override;
    Reply ImportFileSystem(const sdbus::UnixFd& fd, const std::string& local_name, const bool& force,
                           const bool& read_only) override;
    Reply ExportTar(const std::string& local_name, const sdbus::UnixFd& fd, const std::string& format) override;
    Reply ExportRaw(const std::string& local_name, const sdbus::UnixFd& fd, const std::string& format) override;
    Reply PullTar(const std::string& url, const std::string& local_name, const std::string& verify_mode,
                  const bool& force) override;
    Reply PullRaw(const std::string& url, const std::string& local_name, const std::string& verify_mode,
                  const bool& force) override;
    Reply PullOci(const std::string& ref, const std::string& local_name, const std::string& image_class,
                  const uint64_t& flags) override;
    Reply ImportOci(const sdbus::UnixFd& fd, const std::string& local_name, const std::string& image_class,
                    const uint64_t& flags) override;
    std::vector<sdbus::Struct<uint32_t, std::string, std::string, std::string, double, sdbus::ObjectPath>> ListTransfers()
        override;
    void CancelTransfer(const uint32_t& transfer_id) override;

    Reply import(const char* type, const sdbus::UnixFd& fd, const std::string& local, bool force, bool read_only);
    Reply export_(const char* type, const std::string& local, const sdbus::UnixFd& fd, const std::string& format);
    Reply pull(const char* type, const std::string& url, const std::string& local, const std::string& verify, bool force);

    sdbus::IConnection& connection_;
    EventLoop& loop_;
    std::string transfer_path_;
    std::string pool_;
    uint32_t next_id_ = 1;
    std::map<uint32_t, std::unique_ptr<TransferObject>> transfers_;
    TransferUnits units_;
};

}  // namespace mk::bus
