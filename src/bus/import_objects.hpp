// org.freedesktop.import1 (systemd 252 importd compatible): the Manager at /org/freedesktop/import1
// and one Transfer object per running transfer at /org/freedesktop/import1/transfer/_<id>. Each
// transfer is a machd-transfer child (docs/images.md); machd never parses image data, it only relays
// the child's progress pipe. Thread-hostile (machd's one loop).
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>

#include <sdbus-c++/sdbus-c++.h>

#include "Import1Manager-adaptor.h"
#include "Import1Transfer-adaptor.h"
#include "bus/event_loop.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::bus {

inline constexpr const char* kImportBusName = "org.freedesktop.import1";
inline constexpr const char* kImportManagerPath = "/org/freedesktop/import1";

class ImportManagerObject;

class TransferObject final : public sdbus::AdaptorInterfaces<org::freedesktop::import1::Transfer_adaptor,
                                                             sdbus::Properties_adaptor> {
public:
    TransferObject(sdbus::IConnection& connection, ImportManagerObject& manager, uint32_t id, std::string type,
                   std::string local, std::string remote, std::string verify);
    ~TransferObject();

    std::string path() const;
    void cancel();  // SIGTERM to the helper

    uint32_t id_;
    std::string type_, local_, remote_, verify_;
    double progress_ = 0;
    pid_t pid_ = -1;
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

class ImportManagerObject final : public sdbus::AdaptorInterfaces<org::freedesktop::import1::Manager_adaptor,
                                                                  sdbus::Properties_adaptor> {
public:
    // `transfer_path`: the machd-transfer binary; `pool`: the image pool directory.
    ImportManagerObject(sdbus::IConnection& connection, EventLoop& loop, std::string transfer_path, std::string pool);
    ~ImportManagerObject();

    static constexpr size_t kTransfersMax = 64;

private:
    friend class TransferObject;
    using Reply = std::tuple<uint32_t, sdbus::ObjectPath>;
    Reply start(const std::string& type, const std::string& local, const std::string& remote,
                const std::string& verify, int client_fd, bool client_is_stdout, std::vector<std::string> args);
    void read_progress(TransferObject& t);
    void finished(uint32_t id);

    Reply ImportTar(const sdbus::UnixFd& fd, const std::string& local_name, const bool& force, const bool& read_only) override;
    Reply ImportRaw(const sdbus::UnixFd& fd, const std::string& local_name, const bool& force, const bool& read_only) override;
    Reply ImportFileSystem(const sdbus::UnixFd& fd, const std::string& local_name, const bool& force, const bool& read_only) override;
    Reply ExportTar(const std::string& local_name, const sdbus::UnixFd& fd, const std::string& format) override;
    Reply ExportRaw(const std::string& local_name, const sdbus::UnixFd& fd, const std::string& format) override;
    Reply PullTar(const std::string& url, const std::string& local_name, const std::string& verify_mode, const bool& force) override;
    Reply PullRaw(const std::string& url, const std::string& local_name, const std::string& verify_mode, const bool& force) override;
    std::vector<sdbus::Struct<uint32_t, std::string, std::string, std::string, double, sdbus::ObjectPath>> ListTransfers() override;
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
};

}  // namespace mk::bus
