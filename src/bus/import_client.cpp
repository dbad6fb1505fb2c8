#include "bus/import_client.hpp"

#include <poll.h>

#include <chrono>
#include <map>
#include <optional>

#include <sdbus-c++/sdbus-c++.h>

#include "bus/client_calls.hpp"
#include "bus/names.hpp"

namespace mk::bus {
namespace {}  // namespace

struct ImportClient::Impl {
    std::unique_ptr<sdbus::IConnection> conn;
    std::unique_ptr<sdbus::IProxy> manager;
    std::map<uint32_t, std::string> removed;  // id -> result
};

ImportClient::ImportClient(const BusTarget& target) : impl_(std::make_unique<Impl>()) {
    impl_->conn = open_system_bus(target);
    guarded([&] {
        impl_->manager = sdbus::createProxy(*impl_->conn, kImportBusName, kImportManagerPath);
        impl_->manager->uponSignal("TransferRemoved")
            .onInterface(kImportManagerInterface)
            .call([this](uint32_t id, const sdbus::ObjectPath&, const std::string& result) { impl_->removed[id] = result; });
        impl_->manager->finishRegistration();
    });
}

ImportClient::~ImportClient() = default;

uint32_t ImportClient::import(const std::string& method, int fd, const std::string& local, bool force, bool read_only) {
    return guarded([&] {
        uint32_t id = 0;
        sdbus::ObjectPath path;
        impl_->manager->callMethod(method)
            .onInterface(kImportManagerInterface)
            .withArguments(sdbus::UnixFd(fd), local, force, read_only)
            .storeResultsTo(id, path);
        return id;
    });
}

uint32_t ImportClient::export_(const std::string& method, const std::string& local, int fd, const std::string& format) {
    return guarded([&] {
        uint32_t id = 0;
        sdbus::ObjectPath path;
        impl_->manager->callMethod(method)
            .onInterface(kImportManagerInterface)
            .withArguments(local, sdbus::UnixFd(fd), format)
            .storeResultsTo(id, path);
        return id;
    });
}

uint32_t ImportClient::pull(const std::string& method, const std::string& url, const std::string& local,
                            const std::string& verify, bool force) {
    return guarded([&] {
        uint32_t id = 0;
        sdbus::ObjectPath path;
        impl_->manager->callMethod(method)
            .onInterface(kImportManagerInterface)
            .withArguments(url, local, verify, force)
            .storeResultsTo(id, path);
        return id;
    });
}

uint32_t ImportClient::pull_oci(const std::string& ref, const std::string& local, uint64_t flags) {
    return guarded([&] {
        uint32_t id = 0;
        sdbus::ObjectPath path;
        impl_->manager->callMethod("PullOci")
            .onInterface(kImportManagerInterface)
            .withArguments(ref, local, std::string("machine"), flags)
            .storeResultsTo(id, path);
        return id;
    });
}

uint32_t ImportClient::import_oci(int fd, const std::string& local, uint64_t flags) {
    return guarded([&] {
        uint32_t id = 0;
        sdbus::ObjectPath path;
        impl_->manager->callMethod("ImportOci")
            .onInterface(kImportManagerInterface)
            .withArguments(sdbus::UnixFd(fd), local, std::string("machine"), flags)
            .storeResultsTo(id, path);
        return id;
    });
}

std::vector<TransferEntry> ImportClient::list() {
    return guarded([&] {
        std::vector<sdbus::Struct<uint32_t, std::string, std::string, std::string, double, sdbus::ObjectPath>> raw;
        impl_->manager->callMethod("ListTransfers").onInterface(kImportManagerInterface).storeResultsTo(raw);
        std::vector<TransferEntry> out;
        for (auto& r : raw) out.push_back({r.get<0>(), r.get<1>(), r.get<2>(), r.get<3>(), r.get<4>(), r.get<5>()});
        return out;
    });
}

void ImportClient::cancel(uint32_t id) {
    guarded([&] { impl_->manager->callMethod("CancelTransfer").onInterface(kImportManagerInterface).withArguments(id); });
}

std::string ImportClient::wait(uint32_t id, const std::function<void(double)>& progress,
                               const std::function<void(uint32_t, const std::string&)>& log) {
    return guarded([&] {
        std::string path = std::string(kImportManagerPath) + "/transfer/_" + std::to_string(id);
        auto transfer = sdbus::createProxy(*impl_->conn, kImportBusName, path);
        transfer->uponSignal("LogMessage")
            .onInterface(kImportTransferInterface)
            .call([&](uint32_t prio, const std::string& line) {
                if (log) log(prio, line);
            });
        transfer->finishRegistration();
        uint64_t next_progress = 0;
        for (;;) {
            while (impl_->conn->processPendingRequest()) {
            }
            if (auto it = impl_->removed.find(id); it != impl_->removed.end()) return it->second;
            uint64_t now = static_cast<uint64_t>(
                std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
                    .count());
            if (progress && now >= next_progress) {
                next_progress = now + 200'000;
                try {
                    double p = transfer->getProperty("Progress").onInterface(kImportTransferInterface).get<double>();
                    progress(p);
                } catch (const sdbus::Error&) {
                    // removed meanwhile: TransferRemoved is on its way
                }
                continue;
            }
            auto pd = impl_->conn->getEventLoopPollData();
            pollfd pfd{pd.fd, pd.events, 0};
            ::poll(&pfd, 1, 200);
        }
    });
}

}  // namespace mk::bus
