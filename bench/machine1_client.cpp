// In-process machine1 client for bench/machd_vs_machined.py (same client for machd and machined):
//   machine1-bench register PREFIX PID...   RegisterMachine PREFIX<i> for each PID; prints regs/s
//   machine1-bench list N                   N x ListMachines; prints p50/p99 µs and the row count
//   machine1-bench get NAME N               N x GetMachine(NAME); p50/p99 µs
//   machine1-bench ping N                   N x Peer.Ping (the floor: one round trip)
#include <sdbus-c++/sdbus-c++.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

void report(const char* what, std::vector<double>& us) {
    std::sort(us.begin(), us.end());
    auto pct = [&](double p) { return us[std::min(us.size() - 1, static_cast<size_t>(p * static_cast<double>(us.size())))]; };
    std::printf("%s n=%zu p50_us=%.1f p99_us=%.1f\n", what, us.size(), pct(0.50), pct(0.99));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) return 2;
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
