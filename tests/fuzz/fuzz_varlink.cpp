// libFuzzer target: Varlink framing and call parsing (src/varlink/protocol.hpp). The first byte
// picks a chunk size so that messages arrive split at every possible point. Checks invariants:
// the framer never holds an unfinished message above its bound, and every call that parses
// survives a round trip through encode_call().
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "varlink/protocol.hpp"

using namespace mk::varlink;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    size_t chunk = data[0] % 64 + 1;
    std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
    constexpr size_t kBound = 4096;
    Framer framer(kBound);
    for (size_t off = 0; off < in.size(); off += chunk) {
        try {
            framer.feed(in.substr(off, chunk));
        } catch (const ProtocolError&) {
            return 0;  // over the bound: the connection would be dropped
        }
        for (;;) {
            std::optional<std::string> msg;
            try {
                msg = framer.next();
            } catch (const ProtocolError&) {
                return 0;
            }
            if (!msg) break;
            if (msg->size() > kBound || msg->find('\0') != std::string::npos) abort();
            Call call;
            try {
                call = parse_call(*msg);
            } catch (const ProtocolError&) {
                continue;
            }
            if (!method_name_is_valid(call.method) || (call.oneway && call.more) || !call.parameters.is_object()) abort();
            std::string bytes = encode_call(call);
            if (bytes.empty() || bytes.back() != '\0') abort();
            Call again = parse_call(std::string_view(bytes).substr(0, bytes.size() - 1));
            if (again.method != call.method || again.oneway != call.oneway || again.more != call.more ||
                again.upgrade != call.upgrade || again.parameters != call.parameters)
                abort();
            (void)encode_reply(call.parameters, call.more);
            (void)encode_error(call.method, call.parameters);
        }
    }
    return 0;
}
