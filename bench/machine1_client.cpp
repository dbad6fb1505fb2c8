// In-process machine1 client for bench/machd_vs_machined.py (same client for machd and machined):
//   machine1-bench register PREFIX PID...   RegisterMachine PREFIX<i> for each PID; prints regs/s
//   machine1-bench list N                   N x ListMachines; prints p50/p90/p99 µs and the row count
//   machine1-bench get NAME N               N x GetMachine(NAME); p50/p90/p99 µs
//   machine1-bench ping N                   N x Peer.Ping (the floor: one round trip)
//   machine1-bench varlink-list SOCKET N    N x io.systemd.Machine.List with more on one connection,
//                                           every field of every reply parsed into a struct (RapidJSON,
//                                           in situ: a fast parser, as sd-bus is a fast D-Bus
//                                           unmarshaller); p50/p90/p99 µs and the row count
//   machine1-bench varlink-frames SOCKET N  the same, replies only framed (the transport's floor)
#include <sdbus-c++/sdbus-c++.h>

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include <rapidjson/reader.h>

#include "core/base/unique_fd.hpp"
#include "varlink/protocol.hpp"

namespace {

using Clock = std::chrono::steady_clock;

void report(const char* what, std::vector<double>& us) {
    std::sort(us.begin(), us.end());
    auto pct = [&](double p) {
        return us[std::min(us.size() - 1, static_cast<size_t>(p * static_cast<double>(us.size())))];
    };
    std::printf("%s n=%zu p50_us=%.1f p90_us=%.1f p99_us=%.1f\n", what, us.size(), pct(0.50), pct(0.90), pct(0.99));
}

}  // namespace

// Everything a List record holds without acquireMetadata (io.systemd.Machine.varlink), as the D-Bus
// client gets its (ssso) rows: every field of every reply lands in a struct.
struct MachineRecord {
    std::string name, id, service, klass, root_directory, unit, ssh_address, ssh_private_key_path, control_address;
    uint64_t leader_pid = 0, leader_pidfd_id = 0, supervisor_pid = 0, realtime = 0, monotonic = 0;
    uint64_t vsock_cid = UINT32_MAX;
};

// Fills a MachineRecord from one reply with RapidJSON's SAX reader, in situ (strings are read in the
// receive buffer and copied once, into the record), UTF-8 validated as sd-bus validates strings.
struct RecordHandler : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, RecordHandler> {
    enum class Field {
        other,
        parameters,
        continues,
        error,
        name,
        id,
        service,
        klass,
        leader,
        supervisor,
        root_directory,
        unit,
        timestamp,
        vsock_cid,
        ssh_address,
        ssh_key,
        control_address,
        pid,
        pidfd_id,
        realtime,
        monotonic
    };
    MachineRecord* rec = nullptr;
    bool continues = false, error = false, saw_name = false;
    int depth = 0;
    Field key = Field::other;
    Field object = Field::other;  // the depth-2 field whose object we are in (leader, supervisor, timestamp)

    static Field lookup(std::string_view k) {
        static const std::pair<std::string_view, Field> kKeys[] = {{"parameters", Field::parameters},
                                                                   {"continues", Field::continues},
                                                                   {"error", Field::error},
                                                                   {"name", Field::name},
                                                                   {"id", Field::id},
                                                                   {"service", Field::service},
                                                                   {"class", Field::klass},
                                                                   {"leader", Field::leader},
                                                                   {"supervisor", Field::supervisor},
                                                                   {"rootDirectory", Field::root_directory},
                                                                   {"unit", Field::unit},
                                                                   {"timestamp", Field::timestamp},
                                                                   {"vSockCid", Field::vsock_cid},
                                                                   {"sshAddress", Field::ssh_address},
                                                                   {"sshPrivateKeyPath", Field::ssh_key},
                                                                   {"controlAddress", Field::control_address},
                                                                   {"pid", Field::pid},
                                                                   {"pidfdId", Field::pidfd_id},
                                                                   {"realtime", Field::realtime},
                                                                   {"monotonic", Field::monotonic}};
        for (const auto& [name, value] : kKeys)
            if (name == k) return value;
        return Field::other;
    }
    bool Key(const char* s, rapidjson::SizeType len, bool) { return key = lookup(std::string_view(s, len)), true; }
    bool StartObject() {
        if (depth == 2) object = key;
        return ++depth, true;
    }
    bool EndObject(rapidjson::SizeType) { return --depth, true; }
    bool StartArray() { return ++depth, true; }
    bool EndArray(rapidjson::SizeType) { return --depth, true; }
    bool Bool(bool v) {
        if (depth == 1 && key == Field::continues) continues = v;
        return true;
    }
    bool String(const char* s, rapidjson::SizeType len, bool) {
        if (depth == 1 && key == Field::error) error = true;
        if (depth != 2) return true;
        std::string* field = key == Field::name              ? &rec->name
                             : key == Field::id              ? &rec->id
                             : key == Field::service         ? &rec->service
                             : key == Field::klass           ? &rec->klass
                             : key == Field::root_directory  ? &rec->root_directory
                             : key == Field::unit            ? &rec->unit
                             : key == Field::ssh_address     ? &rec->ssh_address
                             : key == Field::ssh_key         ? &rec->ssh_private_key_path
                             : key == Field::control_address ? &rec->control_address
                                                             : nullptr;
        if (field) field->assign(s, len);
        saw_name |= key == Field::name;
        return true;
    }
    bool Uint64(uint64_t v) {
        if (depth == 2 && key == Field::vsock_cid) rec->vsock_cid = v;
        if (depth != 3) return true;
        if (object == Field::leader && key == Field::pid) rec->leader_pid = v;
        else if (object == Field::leader && key == Field::pidfd_id) rec->leader_pidfd_id = v;
        else if (object == Field::supervisor && key == Field::pid) rec->supervisor_pid = v;
        else if (object == Field::timestamp && key == Field::realtime) rec->realtime = v;
        else if (object == Field::timestamp && key == Field::monotonic) rec->monotonic = v;
        return true;
    }
    bool Uint(unsigned v) { return Uint64(v); }
    bool Int(int v) { return v >= 0 ? Uint64(static_cast<uint64_t>(v)) : true; }
    bool Int64(int64_t v) { return v >= 0 ? Uint64(static_cast<uint64_t>(v)) : true; }
    bool Default() { return true; }
};

// A Varlink client that reads replies into one growing buffer and parses them where they lie, as a
// client built for speed would (mk::varlink::Client copies every message into its own string).
class FastClient {
public:
    explicit FastClient(const std::string& path) : buf_(1 << 20) {
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        if (path.size() >= sizeof sa.sun_path) throw std::runtime_error("socket path too long");
        std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
        fd_ = mk::core::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!fd_ || ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0)
            throw std::system_error(errno, std::generic_category(), "connect " + path);
    }

    void send(std::string_view bytes) {
        while (!bytes.empty()) {
            ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw std::system_error(errno, std::generic_category(), "send");
            bytes.remove_prefix(static_cast<size_t>(n));
        }
    }

    // The next message, NUL-terminated in the buffer (valid until the next call), or nullptr.
    char* next() {
        for (;;) {
            if (void* nul = std::memchr(buf_.data() + scan_, '\0', end_ - scan_)) {
                char* msg = buf_.data() + begin_;
                begin_ = scan_ = static_cast<size_t>(static_cast<char*>(nul) - buf_.data()) + 1;
                return msg;
            }
            scan_ = end_;
            if (begin_ > 0) {  // keep the unfinished message at the front
                std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
                end_ -= begin_;
                scan_ -= begin_;
                begin_ = 0;
            }
            if (end_ == buf_.size()) buf_.resize(buf_.size() * 2);
            ssize_t n = ::recv(fd_.get(), buf_.data() + end_, buf_.size() - end_, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return nullptr;
            end_ += static_cast<size_t>(n);
        }
    }

private:
    mk::core::UniqueFd fd_;
    std::vector<char> buf_;
    size_t begin_ = 0, scan_ = 0, end_ = 0;
};

int varlink_list(const std::string& socket, int n, bool parse, const char* what) {
    FastClient client(socket);
    mk::varlink::Call call;
    call.method = "io.systemd.Machine.List";
    call.more = true;
    const std::string request = mk::varlink::encode_call(call);
    std::vector<double> us;
    std::vector<MachineRecord> rows;
    size_t bytes = 0;  // of the last listing, NULs included
    for (int i = 0; i < n; i++) {
        auto t0 = Clock::now();
        client.send(request);
        rows.clear();
        bytes = 0;
        for (;;) {
            char* message = client.next();
            if (!message) {
                std::fprintf(stderr, "%s: connection closed\n", what);
                return 1;
            }
            bytes += std::strlen(message) + 1;
            bool continues = false;
            if (parse) {
                MachineRecord& rec = rows.emplace_back();
                RecordHandler h;
                h.rec = &rec;
                rapidjson::Reader reader;
                rapidjson::InsituStringStream in(message);
                constexpr unsigned kFlags = rapidjson::kParseInsituFlag | rapidjson::kParseValidateEncodingFlag;
                if (reader.Parse<kFlags>(in, h).IsError() || h.error || !h.saw_name) {
                    std::fprintf(stderr, "%s: bad reply\n", what);
                    return 1;
                }
                continues = h.continues;
            } else {
                rows.emplace_back();
                continues = std::strstr(message, "\"continues\":true") != nullptr;
            }
            if (!continues) break;
        }
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    report(what, us);
    std::printf("rows=%zu bytes=%zu\n", rows.size(), bytes);
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 3) return 2;
    std::string first = argv[1];
    if (first == "varlink-list" || first == "varlink-frames") {
        if (argc != 4) return 2;
        return varlink_list(argv[2], std::atoi(argv[3]), first == "varlink-list", argv[1]);
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
            proxy->callMethod("RegisterMachine")
                .onInterface(mgr)
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
