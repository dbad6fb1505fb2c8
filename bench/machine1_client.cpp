// In-process machine1 client for bench/machd_vs_machined.py (same client for machd and machined):
//   machine1-bench register PREFIX PID...   RegisterMachine PREFIX<i> for each PID; prints regs/s
//   machine1-bench list N                   N x ListMachines; prints p50/p99 µs and the row count
//   machine1-bench get NAME N               N x GetMachine(NAME); p50/p99 µs
//   machine1-bench ping N                   N x Peer.Ping (the floor: one round trip)
//   machine1-bench varlink-list SOCKET N    N x io.systemd.Machine.List with more on one connection
//                                           (every reply parsed); p50/p99 µs and the row count
//   machine1-bench varlink-frames SOCKET N  the same, replies only framed (the transport's floor)
//   machine1-bench varlink-list-rapidjson SOCKET N
//                                           the same, every reply parsed by RapidJSON's SAX reader
//                                           (a client with a fast JSON parser, as sd-bus is a fast
//                                           D-Bus unmarshaller)
#include <sdbus-c++/sdbus-c++.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "varlink/server.hpp"

#ifdef MK_HAVE_RAPIDJSON
#include <rapidjson/reader.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

void report(const char* what, std::vector<double>& us) {
    std::sort(us.begin(), us.end());
    auto pct = [&](double p) { return us[std::min(us.size() - 1, static_cast<size_t>(p * static_cast<double>(us.size())))]; };
    std::printf("%s n=%zu p50_us=%.1f p99_us=%.1f\n", what, us.size(), pct(0.50), pct(0.99));
}

}  // namespace

// What the D-Bus client gets from a ListMachines row (name, class, service), taken from each Varlink
// reply by nlohmann's SAX parser: the whole message is parsed and validated, without building a DOM.
struct RowSax : nlohmann::json_sax<mk::varlink::Json> {
    std::string name, klass, service, error;
    std::string current;
    int depth = 0;
    bool continues = false;
    bool null() override { return true; }
    bool boolean(bool v) override {
        if (depth == 1 && current == "continues") continues = v;
        return true;
    }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t& v) override {
        if (depth == 1 && current == "error") error = v;
        if (depth == 2) {
            if (current == "name") name = std::move(v);
            else if (current == "class") klass = std::move(v);
            else if (current == "service") service = std::move(v);
        }
        return true;
    }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return ++depth, true; }
    bool key(string_t& k) override { return current = k, true; }
    bool end_object() override { return --depth, true; }
    bool start_array(std::size_t) override { return ++depth, true; }
    bool end_array() override { return --depth, true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
};

#ifdef MK_HAVE_RAPIDJSON
// RowSax's twin for RapidJSON.
struct RapidRow : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, RapidRow> {
    std::string name, klass, service, error, current;
    int depth = 0;
    bool continues = false;
    bool Bool(bool v) {
        if (depth == 1 && current == "continues") continues = v;
        return true;
    }
    bool String(const char* s, rapidjson::SizeType len, bool) {
        if (depth == 1 && current == "error") error.assign(s, len);
        if (depth == 2) {
            if (current == "name") name.assign(s, len);
            else if (current == "class") klass.assign(s, len);
            else if (current == "service") service.assign(s, len);
        }
        return true;
    }
    bool Key(const char* s, rapidjson::SizeType len, bool) { return current.assign(s, len), true; }
    bool StartObject() { return ++depth, true; }
    bool EndObject(rapidjson::SizeType) { return --depth, true; }
    bool StartArray() { return ++depth, true; }
    bool EndArray(rapidjson::SizeType) { return --depth, true; }
    bool Default() { return true; }
};
#endif

enum class Parser { none, nlohmann, rapidjson };

// Parses one reply; false if it is not a List record.
bool parse_row(Parser parser, const std::string& message, bool* continues) {
    if (parser == Parser::none) {
        *continues = message.find("\"continues\":true") != std::string::npos;
        return true;
    }
#ifdef MK_HAVE_RAPIDJSON
    if (parser == Parser::rapidjson) {
        RapidRow row;
        rapidjson::Reader reader;
        rapidjson::StringStream in(message.c_str());
        if (reader.Parse(in, row).IsError() || !row.error.empty() || row.name.empty()) return false;
        *continues = row.continues;
        return true;
    }
#endif
    RowSax row;
    if (!mk::varlink::Json::sax_parse(message, &row) || !row.error.empty() || row.name.empty()) return false;
    *continues = row.continues;
    return true;
}

int varlink_list(const std::string& socket, int n, Parser parser, const char* what) {
    mk::varlink::Client client(socket);
    mk::varlink::Call call;
    call.method = "io.systemd.Machine.List";
    call.more = true;
    std::vector<double> us;
    size_t rows = 0;
    for (int i = 0; i < n; i++) {
        auto t0 = Clock::now();
        client.send(call);
        rows = 0;
        for (;;) {
            std::string message = client.receive_raw();
            bool continues = false;
            if (!parse_row(parser, message, &continues)) {
                std::fprintf(stderr, "%s: bad reply %s\n", what, message.c_str());
                return 1;
            }
            rows++;
            if (!continues) break;
        }
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    report(what, us);
    std::printf("rows=%zu\n", rows);
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 3) return 2;
    std::string first = argv[1];
    if (first.starts_with("varlink-")) {
        if (argc != 4) return 2;
        Parser parser = first == "varlink-list" ? Parser::nlohmann
                        : first == "varlink-frames" ? Parser::none
                        : Parser::rapidjson;
#ifndef MK_HAVE_RAPIDJSON
        if (parser == Parser::rapidjson) return 3;  // built without RapidJSON
#endif
        return varlink_list(argv[2], std::atoi(argv[3]), parser, argv[1]);
    }
    auto conn = sdbus::createSystemBusConnection();
    auto proxy = sdbus::createProxy(*conn, "org.freedesktop.machine1", "/org/freedesktop/machine1");
    const char* mgr = "org.freedesktop.machine1.Manager";
    std::string verb = argv[1];
    if (verb == "register") {
        std::string prefix = argv[2];
        auto t0 = Clock::now();
        int n = 0;
        for (int i = 3; i < argc; i++, n++) {
            sdbus::ObjectPath path;
            proxy->callMethod("RegisterMachine").onInterface(mgr)
                .withArguments(prefix + std::to_string(n), std::vector<uint8_t>{}, std::string("bench"),
                               std::string("container"), static_cast<uint32_t>(std::atoi(argv[i])), std::string(""))
                .storeResultsTo(path);
        }
        double s = std::chrono::duration<double>(Clock::now() - t0).count();
        std::printf("register n=%d seconds=%.3f per_second=%.0f\n", n, s, n / s);
        return 0;
    }
    int n = std::atoi(argv[verb == "get" ? 3 : 2]);
    std::vector<double> us;
    size_t rows = 0;
    for (int i = 0; i < n; i++) {
        auto t0 = Clock::now();
        if (verb == "list") {
            std::vector<sdbus::Struct<std::string, std::string, std::string, sdbus::ObjectPath>> r;
            proxy->callMethod("ListMachines").onInterface(mgr).storeResultsTo(r);
            rows = r.size();
        } else if (verb == "get") {
            sdbus::ObjectPath p;
            proxy->callMethod("GetMachine").onInterface(mgr).withArguments(std::string(argv[2])).storeResultsTo(p);
        } else if (verb == "ping") {
            proxy->callMethod("Ping").onInterface("org.freedesktop.DBus.Peer");
        } else {
            return 2;
        }
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    report(verb.c_str(), us);
    if (verb == "list") std::printf("rows=%zu\n", rows);
    return 0;
}
