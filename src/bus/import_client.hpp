// Client side of org.freedesktop.import1 for machctl's transfer verbs (plain C++ types; machctl
// never includes sdbus-c++). Errors: ClientError (bus/machine_client.hpp). Thread-compatible.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bus/machine_client.hpp"

namespace mk::bus {

struct TransferEntry {
    uint32_t id = 0;
    std::string type, remote, local;
    double progress = 0;  // 0..1
    std::string path;
};

class ImportClient {
public:
    explicit ImportClient(
        const BusTarget& target = {});  // connects and subscribes to TransferRemoved; throws ClientError(no_bus)
    ~ImportClient();
    ImportClient(const ImportClient&) = delete;
    ImportClient& operator=(const ImportClient&) = delete;

    // method: ImportTar/ImportRaw/ImportFileSystem. Returns the transfer id.
    uint32_t import(const std::string& method, int fd, const std::string& local, bool force, bool read_only);
    uint32_t export_(const std::string& method, const std::string& local, int fd, const std::string& format);
    uint32_t pull(const std::string& method, const std::string& url, const std::string& local, const std::string& verify,
                  bool force);
    // PullOci / ImportOci: flags bit 0 force, bit 1 read-only, bit 32 flatten.
    uint32_t pull_oci(const std::string& ref, const std::string& local, uint64_t flags);
    uint32_t import_oci(int fd, const std::string& local, uint64_t flags);
    std::vector<TransferEntry> list();
    void cancel(uint32_t id);

    // Waits for TransferRemoved of `id`; calls `progress` (0..1) about every 200 ms and `log` for
    // each LogMessage line. Returns the result ("done", "failed", "canceled").
    std::string wait(uint32_t id, const std::function<void(double)>& progress,
                     const std::function<void(uint32_t, const std::string&)>& log);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace mk::bus
