// libFuzzer target: Varlink framing, call parsing (src/varlink/protocol.hpp) and the typed
// parameter reads the methods use (src/varlink/params.hpp). The first byte picks a chunk size so
// that messages arrive split at every possible point. Checks invariants: the framer never holds an
// unfinished message above its bound, every call that parses survives a round trip through
// encode_call(), and a parameter is either read within its bounds or refused as InvalidParameter
// naming it. The hand-written reply writer (src/varlink/json_writer.hpp) must produce the bytes
// nlohmann's dump with error_handler_t::replace produces, for every string and key.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "varlink/errors.hpp"
#include "varlink/json_writer.hpp"
#include "varlink/params.hpp"
#include "varlink/protocol.hpp"

using namespace mk::varlink;

namespace {

template <typename F>
void refused_only_as_invalid_parameter(const char* key, F&& f) {
    try {
        f();
    } catch (const Error& e) {
        if (e.name != kInvalidParameter || e.parameters.value("parameter", "") != key) abort();
    }
}

// The reads machine_api.cpp makes, over whatever parameters the call has.
void read_parameters(const Json& parameters) {
    try {
        Params p(parameters,
                 {"name", "pid", "leader", "leaderProcessId", "signal", "args", "ifIndices", "mode", "readOnly"});
        refused_only_as_invalid_parameter("name", [&] { (void)p.string("name"); });
        refused_only_as_invalid_parameter("pid", [&] {
            if (auto id = p.process_id("pid"); id && (id->pid < 0 || id->pid > INT32_MAX)) abort();
        });
        refused_only_as_invalid_parameter("leader", [&] {
            if (auto v = p.integer("leader", 1, INT32_MAX); v && (*v < 1 || *v > INT32_MAX)) abort();
        });
        refused_only_as_invalid_parameter("leaderProcessId", [&] { (void)p.process_id("leaderProcessId"); });
        refused_only_as_invalid_parameter("signal", [&] {
            if (auto v = p.integer("signal", 1, 64); v && (*v < 1 || *v > 64)) abort();
        });
        refused_only_as_invalid_parameter("args", [&] { (void)p.strings("args"); });
        refused_only_as_invalid_parameter("ifIndices", [&] {
            if (auto v = p.integers("ifIndices", 1, INT32_MAX))
                for (auto i : *v)
                    if (i < 1 || i > INT32_MAX) abort();
        });
        refused_only_as_invalid_parameter("mode", [&] {
            if (auto m = p.enumeration("mode", {"tty", "login", "shell"});
                m && *m != "tty" && *m != "login" && *m != "shell")
                abort();
        });
        refused_only_as_invalid_parameter("readOnly", [&] { (void)p.boolean("readOnly"); });
    } catch (const Error& e) {
        // An unknown key: refused by name, and the name is one of the call's keys.
        if (e.name != kInvalidParameter || !parameters.contains(e.parameters.value("parameter", std::string("\x01"))))
            abort();
    }
}

// List records are written by ObjectWriter and must read as nlohmann would have written them.
void writer_matches_nlohmann(std::string_view bytes) {
    std::string value(bytes);
    std::string ours;
    append_json_string(ours, value);
    if (ours != Json(value).dump(-1, ' ', false, Json::error_handler_t::replace)) abort();
    std::string record;
    ObjectWriter w(record);
    w.string("name", value).number("pid", bytes.size());
    w.object("leader").number("pid", 1).string("unit", value).close();
    w.boolean("b", !bytes.empty());
    w.close();
    Json expected = Json::object();
    expected["name"] = value;
    expected["pid"] = bytes.size();
    expected["leader"] = Json{{"pid", 1}, {"unit", value}};
    expected["b"] = !bytes.empty();
    // nlohmann orders keys; ours keeps the caller's order, which here is the same but for "b".
    Json parsed = Json::parse(record, nullptr, false);
    if (parsed.is_discarded() || parsed.dump(-1, ' ', false, Json::error_handler_t::replace) !=
                                     expected.dump(-1, ' ', false, Json::error_handler_t::replace))
        abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    size_t chunk = data[0] % 64 + 1;
    std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
    writer_matches_nlohmann(in);
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
            read_parameters(call.parameters);
            (void)encode_reply(call.parameters, call.more);
            (void)encode_error(call.method, call.parameters);
        }
    }
    return 0;
}
