#include "bus/credentials.hpp"

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

void require_root(const sdbus::IObject& object, const char* what) {
    if (current_caller(object).uid != 0)
        throw sdbus::Error(kAccessDenied, std::string("Access denied: only root may ") + what);
}

}  // namespace mk::bus
