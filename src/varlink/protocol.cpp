#include "varlink/protocol.hpp"

#include <cstring>

namespace mk::varlink {
namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool interface_name_is_valid(std::string_view s) {
    // varlink.org: reverse-domain, each label [A-Za-z]([-]*[A-Za-z0-9])*, at least two labels.
    if (s.empty() || s.size() > 255) return false;
    size_t labels = 0;
    size_t start = 0;
    for (;;) {
        size_t dot = s.find('.', start);
        std::string_view label = s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (label.empty() || !is_alpha(label.front()) || label.back() == '-') return false;
        for (char c : label)
            if (!is_alpha(c) && !is_digit(c) && c != '-') return false;
        labels++;
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    return labels >= 2;
}

bool flag(const Json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return false;
    if (!it->is_boolean()) throw ProtocolError(std::string("'") + key + "' is not a boolean");
    return it->get<bool>();
}

}  // namespace

std::string_view Call::interface() const {
    auto dot = method.rfind('.');
    return dot == std::string::npos ? std::string_view() : std::string_view(method).substr(0, dot);
}

std::string_view Call::member() const {
    auto dot = method.rfind('.');
    return dot == std::string::npos ? std::string_view(method) : std::string_view(method).substr(dot + 1);
}

bool method_name_is_valid(std::string_view name) {
    auto dot = name.rfind('.');
    if (dot == std::string_view::npos) return false;
    std::string_view member = name.substr(dot + 1);
    if (member.empty() || !(member.front() >= 'A' && member.front() <= 'Z')) return false;
    for (char c : member)
        if (!is_alpha(c) && !is_digit(c)) return false;
    return interface_name_is_valid(name.substr(0, dot));
}

Call parse_call(std::string_view message) {
    Json j = Json::parse(message, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw ProtocolError("message is not valid JSON");
    if (!j.is_object()) throw ProtocolError("message is not a JSON object");
    Call call;
    for (const auto& [key, value] : j.items()) {
        if (key == "method") {
            if (!value.is_string()) throw ProtocolError("'method' is not a string");
            call.method = value.get<std::string>();
        } else if (key == "parameters") {
            if (value.is_null()) continue;
            if (!value.is_object()) throw ProtocolError("'parameters' is not an object");
            call.parameters = value;
        } else if (key != "oneway" && key != "more" && key != "upgrade") {
            throw ProtocolError("unknown field '" + key + "' in a call");
        }
    }
    if (call.method.empty()) throw ProtocolError("call without 'method'");
    if (!method_name_is_valid(call.method)) throw ProtocolError("malformed method name '" + call.method + "'");
    call.oneway = flag(j, "oneway");
    call.more = flag(j, "more");
    call.upgrade = flag(j, "upgrade");
    if (call.oneway && call.more) throw ProtocolError("'oneway' and 'more' together");
    return call;
}

namespace {

std::string terminated(const Json& j) {
    // Invalid UTF-8 in a string (a file name from a guest) is replaced rather than thrown on.
    std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
    s.push_back('\0');
    return s;
}

}  // namespace

std::string encode_reply(const Json& parameters, bool continues) {
    Json j = Json::object();
    j["parameters"] = parameters.is_null() ? Json::object() : parameters;
    if (continues) j["continues"] = true;
    return terminated(j);
}

std::string encode_error(std::string_view error, const Json& parameters) {
    Json j = Json::object();
    j["error"] = error;
    j["parameters"] = parameters.is_null() ? Json::object() : parameters;
    return terminated(j);
}

std::string encode_call(const Call& call) {
    Json j = Json::object();
    j["method"] = call.method;
    j["parameters"] = call.parameters;
    if (call.oneway) j["oneway"] = true;
    if (call.more) j["more"] = true;
    if (call.upgrade) j["upgrade"] = true;
    return terminated(j);
}

void Framer::feed(std::string_view bytes) {
    if (consumed_ > 0 && consumed_ == buffer_.size()) {
        buffer_.clear();
        consumed_ = 0;
    }
    buffer_.append(bytes);
    // Only the unfinished tail counts against the bound: complete messages are handed out first.
    size_t last_nul = buffer_.rfind('\0');
    size_t tail_start = last_nul == std::string::npos || last_nul < consumed_ ? consumed_ : last_nul + 1;
    if (buffer_.size() - tail_start > max_) throw ProtocolError("message exceeds " + std::to_string(max_) + " bytes");
}

std::optional<std::string> Framer::next() {
    size_t nul = buffer_.find('\0', consumed_);
    if (nul == std::string::npos) {
        if (consumed_ > 0) {
            buffer_.erase(0, consumed_);
            consumed_ = 0;
        }
        return std::nullopt;
    }
    std::string msg = buffer_.substr(consumed_, nul - consumed_);
    consumed_ = nul + 1;
    if (msg.size() > max_) throw ProtocolError("message exceeds " + std::to_string(max_) + " bytes");
    return msg;
}

}  // namespace mk::varlink
