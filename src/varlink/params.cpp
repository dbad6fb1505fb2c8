#include "varlink/params.hpp"

namespace mk::varlink {

Params::Params(const Json& parameters, std::initializer_list<std::string_view> known) : j_(parameters) {
    for (const auto& [key, value] : j_.items()) {
        bool ok = false;
        for (auto k : known) ok = ok || k == key;
        if (!ok) throw_invalid_parameter(key);
    }
}

const Json* Params::get(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
}

std::optional<std::string> Params::string(const char* key) const {
    const Json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) throw_invalid_parameter(key);
    return v->get<std::string>();
}

std::optional<bool> Params::boolean(const char* key) const {
    const Json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) throw_invalid_parameter(key);
    return v->get<bool>();
}

namespace {

bool read_integer(const Json& v, int64_t min, int64_t max, int64_t* out) {
    if (v.is_number_unsigned()) {
        uint64_t u = v.get<uint64_t>();
        if (u > static_cast<uint64_t>(INT64_MAX)) return false;
        *out = static_cast<int64_t>(u);
    } else if (v.is_number_integer()) {
        *out = v.get<int64_t>();
    } else {
        return false;
    }
    return *out >= min && *out <= max;
}

}  // namespace

std::optional<int64_t> Params::integer(const char* key, int64_t min, int64_t max) const {
    const Json* v = get(key);
    if (!v) return std::nullopt;
    int64_t out = 0;
    if (!read_integer(*v, min, max, &out)) throw_invalid_parameter(key);
    return out;
}

std::optional<std::vector<std::string>> Params::strings(const char* key) const {
    const Json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_array()) throw_invalid_parameter(key);
    std::vector<std::string> out;
    for (const auto& e : *v) {
        if (!e.is_string()) throw_invalid_parameter(key);
        out.push_back(e.get<std::string>());
    }
    return out;
}

std::optional<std::vector<int64_t>> Params::integers(const char* key, int64_t min, int64_t max) const {
    const Json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_array()) throw_invalid_parameter(key);
    std::vector<int64_t> out;
    for (const auto& e : *v) {
        int64_t i = 0;
        if (!read_integer(e, min, max, &i)) throw_invalid_parameter(key);
        out.push_back(i);
    }
    return out;
}

std::optional<Params::ProcessId> Params::process_id(const char* key) const {
    const Json* v = get(key);
    if (!v) return std::nullopt;
    ProcessId out;
    if (v->is_object()) {
        auto pid = v->find("pid");
        if (pid == v->end() || !read_integer(*pid, 0, INT32_MAX, &out.pid)) throw_invalid_parameter(key);
        auto id = v->find("pidfdId");
        if (id != v->end() && !id->is_null()) {
            if (!id->is_number_unsigned()) throw_invalid_parameter(key);
            out.pidfd_id = id->get<uint64_t>();
        }
        auto boot = v->find("bootId");
        if (boot != v->end() && !boot->is_null() && !boot->is_string()) throw_invalid_parameter(key);
        for (const auto& [k, value] : v->items())
            if (k != "pid" && k != "pidfdId" && k != "bootId") throw_invalid_parameter(key);
        return out;
    }
    if (!read_integer(*v, 0, INT32_MAX, &out.pid)) throw_invalid_parameter(key);
    return out;
}

std::optional<std::string> Params::enumeration(const char* key, std::initializer_list<std::string_view> values) const {
    auto s = string(key);
    if (!s) return std::nullopt;
    for (auto v : values)
        if (v == *s) return s;
    throw_invalid_parameter(key);
}

}  // namespace mk::varlink
