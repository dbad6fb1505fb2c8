// The Varlink wire protocol (https://varlink.org/Method-Call), pure: NUL-delimited JSON messages, a
// call's method/parameters/oneway/more/upgrade, a reply's parameters/continues/error. No I/O, no
// state beyond one connection's input buffer; thread-compatible. Errors: ProtocolError for anything
// the peer sent wrong (the connection is dropped: varlink has no way to answer a malformed message).
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace mk::varlink {

using Json = nlohmann::json;

// systemd's sd-varlink refuses messages above 16 MiB (VARLINK_BUFFER_MAX); so do we, for input and
// for any one reply.
inline constexpr size_t kMessageMax = 16u << 20;

struct ProtocolError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Call {
    std::string method;  // "io.systemd.Machine.List"
    Json parameters = Json::object();
    bool oneway = false;
    bool more = false;
    bool upgrade = false;

    // "io.systemd.Machine" and "List"; the interface is empty when the name has no dot.
    [[nodiscard]] std::string_view interface() const;
    [[nodiscard]] std::string_view member() const;
};

// One message (without its NUL) as a call. Throws ProtocolError: not JSON, not an object, no
// string "method", a malformed method name, non-object "parameters", non-boolean flags, oneway
// together with more, or an unknown top-level key.
Call parse_call(std::string_view message);

// A fully qualified method or error name: interface (dot-separated words of [A-Za-z0-9-], starting
// with a letter) plus a member starting with an upper-case letter, [A-Za-z0-9] after.
bool method_name_is_valid(std::string_view name);

// The bytes of a reply, each ending in its NUL.
std::string encode_reply(const Json& parameters, bool continues);
std::string encode_error(std::string_view error, const Json& parameters = Json::object());
std::string encode_call(const Call& call);  // for clients (tests, bench)

// Splits a byte stream into NUL-terminated messages, holding at most kMessageMax bytes of an
// unfinished one.
class Framer {
public:
    explicit Framer(size_t max = kMessageMax) : max_(max) {}
    // Appends received bytes. Throws ProtocolError once an unfinished message exceeds the bound.
    void feed(std::string_view bytes);
    // The next complete message, without its NUL; nullopt until one is complete.
    std::optional<std::string> next();
    [[nodiscard]] bool empty() const noexcept { return buffer_.size() == consumed_; }

private:
    size_t max_;
    std::string buffer_;
    size_t consumed_ = 0;  // bytes of buffer_ already returned
};

}  // namespace mk::varlink
