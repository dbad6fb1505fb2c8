// Appends one JSON object as text, field by field, without building a DOM: the List replies of a
// thousand machines are made this way (nlohmann objects cost an allocation per field). Strings are
// escaped as RFC 8259 asks; bytes that are not UTF-8 (a root directory is any byte string) become
// U+FFFD, as nlohmann's error_handler_t::replace does. Pure; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mk::varlink {

// `s` as a JSON string literal, quotes included, appended to `out`.
void append_json_string(std::string& out, std::string_view s);

// Keys are IDL field names (ASCII identifiers) and are appended as they are, unescaped.
class ObjectWriter {
public:
    explicit ObjectWriter(std::string& out) : out_(out) { out_.push_back('{'); }
    ObjectWriter& string(std::string_view key, std::string_view value);
    ObjectWriter& number(std::string_view key, uint64_t value);
    ObjectWriter& boolean(std::string_view key, bool value);
    // A nested object under `key`, written into the same string; close() it before the next field.
    ObjectWriter object(std::string_view key);
    // `json` must be one complete JSON value.
    ObjectWriter& raw(std::string_view key, std::string_view json);
    void close() { out_.push_back('}'); }

private:
    struct Nested {};  // the '{' is already written
    ObjectWriter(std::string& out, Nested) : out_(out) {}
    void key(std::string_view k, std::string_view tail = {});
    std::string& out_;
    bool first_ = true;
};

}  // namespace mk::varlink
