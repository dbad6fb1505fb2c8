#include "bus/credentials.hpp"

#include <systemd/sd-bus.h>

#include <sdbus-c++/Error.h>

#include <cstring>
#include <deque>
#include <string>
#include <unordered_map>

#include "bus/errors.hpp"
#include "bus/polkit.hpp"
#include "bus/raw_message.hpp"
#include "core/machine/owner.hpp"

namespace mk::bus {

namespace {

// Credentials by (bus instance, unique sender name). The bus daemon fixes a connection's UID and
// PID when it connects, and never reuses a unique name, so an entry cannot go stale; asking the
// daemon again costs a synchronous round trip per call (half of a registration's time).
// Bounded; per thread.
class CredsCache {
public:
    const Caller* find(const std::string& key) const {
        auto it = map_.find(key);
        return it == map_.end() ? nullptr : &it->second;
    }
    void put(const std::string& key, Caller c) {
        if (map_.size() >= kMax) {
            map_.erase(order_.front());
            order_.pop_front();
        }
        if (map_.emplace(key, c).second) order_.push_back(key);
    }

private:
    static constexpr size_t kMax = 256;
    std::unordered_map<std::string, Caller> map_;
    std::deque<std::string> order_;
};

thread_local CredsCache cache;

std::string cache_key(sd_bus_message* message) {
    const char* sender = sd_bus_message_get_sender(message);
    sd_id128_t id{};
    if (!sender || sd_bus_get_bus_id(sd_bus_message_get_bus(message), &id) < 0) return {};
    char hex[SD_ID128_STRING_MAX];
    return std::string(sd_id128_to_string(id, hex)) + sender;
}

}  // namespace

Caller current_caller(const sdbus::IObject& object) {
    const sdbus::Message* msg = object.getCurrentlyProcessedMessage();
    if (!msg) throw sdbus::Error(kAccessDenied, "No caller credentials");
    return caller_of(raw_message(*msg));
}

Caller caller_of(sd_bus_message* message) {
    std::string key = cache_key(message);
    if (!key.empty())
        if (const Caller* c = cache.find(key)) {
            Caller out = *c;
            out.granted = polkit_granted_action(message);
            return out;
        }
    // What the bus daemon recorded when the peer connected (SO_PEERCRED: its effective UID and
    // PID); no /proc reads, which could race with the PID's reuse.
    sd_bus_creds* creds = nullptr;
    Caller c{};
    int r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_EUID | SD_BUS_CREDS_PID, &creds);
    if (r >= 0) r = sd_bus_creds_get_euid(creds, &c.uid);
    if (r >= 0) r = sd_bus_creds_get_pid(creds, &c.pid);
    sd_bus_creds_unref(creds);
    if (r < 0) throw bus_error(kAccessDenied, std::string("Cannot determine caller credentials: ") + strerror(-r));
    if (!key.empty()) cache.put(key, c);
    c.granted = polkit_granted_action(message);
    return c;
}

void require_root(const Caller& caller, const char* what) {
    if (core::caller_is_privileged(caller.uid)) return;
    uid_t owner = core::manager_owner();
    throw bus_error(kAccessDenied, std::string("Access denied: only ") +
                                       (owner == 0 ? "root" : "root and UID " + std::to_string(owner)) + " may " + what);
}

void require_action(const Caller& caller, const char* action, const char* what) {
    if (core::caller_is_privileged(caller.uid) || caller.granted == action) return;
    throw sdbus::Error(kAccessDenied, std::string("Access denied: ") + what + " needs root or polkit's " + action);
}

}  // namespace mk::bus
