#include "bus/credentials.hpp"

#include <systemd/sd-bus.h>

#include <sdbus-c++/Error.h>
#include <sdbus-c++/Message.h>

#include <string>

#include "bus/errors.hpp"

namespace mk::bus {

Caller current_caller(const sdbus::IObject& object) {
    const sdbus::Message* msg = object.getCurrentlyProcessedMessage();
    if (!msg) throw sdbus::Error(kAccessDenied, "No caller credentials");
    try {
        return Caller{msg->getCredsUid(), msg->getCredsPid()};
    } catch (const sdbus::Error&) {
        throw sdbus::Error(kAccessDenied, "Cannot determine caller credentials");
    }
}

Caller caller_of(sd_bus_message* message) {
    sd_bus_creds* creds = nullptr;
    Caller c{};
    int r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_UID | SD_BUS_CREDS_PID | SD_BUS_CREDS_AUGMENT, &creds);
    if (r >= 0) r = sd_bus_creds_get_uid(creds, &c.uid);
    if (r >= 0) r = sd_bus_creds_get_pid(creds, &c.pid);
    sd_bus_creds_unref(creds);
    if (r < 0) throw sdbus::Error(kAccessDenied, "Cannot determine caller credentials");
    return c;
}

void require_root(const Caller& caller, const char* what) {
    if (caller.uid != 0) throw sdbus::Error(kAccessDenied, std::string("Access denied: only root may ") + what);
}

}  // namespace mk::bus
