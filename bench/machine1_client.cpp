// In-process machine1 client for bench/machd_vs_machined.py (same client for machd and machined):
//   machine1-bench register PREFIX PID...   RegisterMachine PREFIX<i> for each PID; prints regs/s
//   machine1-bench list N                   N x ListMachines; prints p50/p99 µs and the row count
//   machine1-bench get NAME N               N x GetMachine(NAME); p50/p99 µs
//   machine1-bench ping N                   N x Peer.Ping (the floor: one round trip)
//   machine1-bench varlink-list SOCKET N    N x io.systemd.Machine.List with more on one connection
//                                           (every reply parsed); p50/p99 µs and the row count
#include <sdbus-c++/sdbus-c++.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "varlink/server.hpp"

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

int varlink_list(const std::string& socket, int n) {
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
            RowSax row;
            if (!mk::varlink::Json::sax_parse(message, &row) || !row.error.empty() || row.name.empty()) {
                std::fprintf(stderr, "varlink-list: bad reply %s\n", message.c_str());
                return 1;
            }
            rows++;
            if (!row.continues) break;
        }
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    report("varlink-list", us);
    std::printf("rows=%zu\n", rows);
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 3) return 2;
    if (std::string(argv[1]) == "varlink-list") return argc == 4 ? varlink_list(argv[2], std::atoi(argv[3])) : 2;
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
