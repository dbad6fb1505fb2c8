#include "varlink/server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <system_error>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "varlink/idl.hpp"

namespace mk::varlink {
namespace {

// recvmsg() into `buf`, appending any SCM_RIGHTS fds that came with the bytes to `fds` (they are
// close-on-exec). Returns what recvmsg returns.
ssize_t receive_with_fds(int fd, char* buf, size_t len, int flags, std::vector<core::UniqueFd>& fds) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kFdsPerReplyMax)];
    iovec iov{buf, len};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
            for (size_t i = 0; i < count; i++) fds.emplace_back(p[i]);
        }
    return n;
}

// Replies of a stream are queued and sent in batches of about this size (one sendmsg, not one per
// record); a batch buffer is reserved with some slack for the record that crosses the mark.
constexpr size_t kBatchBytes = 256u << 10;
constexpr size_t kBatchReserve = kBatchBytes + 4096;

// sd-bus gives its sockets an 8 MiB send buffer (SNDBUF_SIZE); so do we. A 1,000-machine List is
// ~210 KB of records, and the default 208 KiB (counted in skb truesize, more than the payload) would
// leave part of it for a later loop round, after the client has drained the first part. Root may
// exceed net.core.wmem_max with SO_SNDBUFFORCE; anyone else gets what SO_SNDBUF grants. Best effort.
void enlarge_send_buffer(int fd) {
    constexpr int kSendBuffer = 8 << 20;
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &kSendBuffer, sizeof kSendBuffer) < 0)
        (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kSendBuffer, sizeof kSendBuffer);
}

}  // namespace

// One accepted peer: its socket, input framing and queued output. Owned by the Server (shared so
// that a Request answered later can find out whether it is still there).
class Connection : public std::enable_shared_from_this<Connection> {
public:
    Connection(Server& server, FdLoop& loop, core::UniqueFd fd, Peer peer)
        : server_(server), loop_(loop), fd_(std::move(fd)), peer_(peer) {}

    int fd() const { return fd_.get(); }
    const Peer& peer() const { return peer_; }

    // The loop saw the socket readable, writable or hung up.
    void on_event() {
        auto self = shared_from_this();  // the callbacks below may drop us
        if (!flush()) return server_.drop(fd());
        if (!read_input()) return server_.drop(fd());
        process();
        // A peer that hung up gets nothing more: calls still being answered are dropped with it.
        if (eof_ || dead_) server_.drop(fd());
    }

    void queue(std::string bytes, std::vector<core::UniqueFd> fds, bool final) {
        if (dead_) return;
        output_bytes_ += bytes.size();
        output_.push_back(Out{std::move(bytes), std::move(fds), 0});
        if (output_bytes_ > kOutputMax) {
            std::fprintf(stderr, "machd: varlink peer pid %d does not read its replies, disconnecting\n", peer_.pid);
            return fail();
        }
        if (final) busy_ = false;
        // Replies of a stream go out together (one sendmsg, not one per record) unless many pile up.
        if (!final && output_bytes_ < kBatchBytes) return;
        if (!flush()) return fail();
        if (final && !in_process_) process();
    }

    bool dead() const { return dead_; }

    // An empty string with the capacity of an earlier batch sent on this connection: the next List
    // is written into memory that is mapped and warm instead of a fresh ~210 KB allocation.
    std::string take_buffer() {
        std::string b = std::move(spare_);
        b.clear();
        return b;
    }

private:
    struct Out {
        std::string bytes;
        std::vector<core::UniqueFd> fds;  // sent with the first byte of `bytes`
        size_t offset;
    };

    void fail() {
        dead_ = true;
        // Not from inside a dispatch: the Server would destroy us while the caller still runs.
        loop_.set_writable(fd(), true);  // the next round drops us through on_event()
    }

    // Returns false when the connection is broken.
    bool flush() {
        if (dead_) return false;
        while (!output_.empty()) {
            // One sendmsg for as many queued replies as fit in an iovec array: a 1,000-record
            // List leaves in a handful of calls. Fds travel with the first byte of their reply,
            // so a reply with fds starts a new call.
            constexpr size_t kIovMax = 256;
            iovec iov[kIovMax];
            size_t count = 0;
            for (auto it = output_.begin(); it != output_.end() && count < kIovMax; ++it) {
                if (count > 0 && !it->fds.empty()) break;
                iov[count++] = iovec{it->bytes.data() + it->offset, it->bytes.size() - it->offset};
            }
            Out& o = output_.front();
            msghdr msg{};
            msg.msg_iov = iov;
            msg.msg_iovlen = count;
            alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kFdsPerReplyMax)];
            if (!o.fds.empty()) {
                std::memset(control, 0, sizeof control);
                msg.msg_control = control;
                msg.msg_controllen = CMSG_SPACE(sizeof(int) * o.fds.size());
                cmsghdr* c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * o.fds.size());
                int* p = reinterpret_cast<int*>(CMSG_DATA(c));
                for (size_t i = 0; i < o.fds.size(); i++) p[i] = o.fds[i].get();
            }
            ssize_t n = core::retry_eintr([&] { return ::sendmsg(fd(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL); });
            if (n < 0) {
                if (errno == EAGAIN) break;
                return false;
            }
            o.fds.clear();  // passed with the first chunk; ours close now
            auto left = static_cast<size_t>(n);
            while (left > 0) {
                Out& front = output_.front();
                size_t part = std::min(left, front.bytes.size() - front.offset);
                front.offset += part;
                left -= part;
                if (front.offset == front.bytes.size()) {
                    output_bytes_ -= front.bytes.size();
                    // At most one batch's buffer stays with an idle connection (512 connections: 136 MB).
                    if (front.bytes.capacity() > spare_.capacity() && front.bytes.capacity() <= kBatchReserve)
                        spare_ = std::move(front.bytes);
                    output_.pop_front();
                }
            }
        }
        bool want = !output_.empty();
        if (want != writable_) {
            loop_.set_writable(fd(), want);
            writable_ = want;
        }
        return true;
    }

    // Returns false on a protocol or I/O error.
    bool read_input() {
        char buf[65536];
        for (;;) {
            // We accept no fds from clients: any that arrive close with `ignored`.
            std::vector<core::UniqueFd> ignored;
            ssize_t n = core::retry_eintr([&] { return receive_with_fds(fd(), buf, sizeof buf, MSG_DONTWAIT, ignored); });
            if (n < 0) {
                if (errno == EAGAIN) return true;
                return false;
            }
            if (n == 0) {
                eof_ = true;  // oneway calls read with the EOF still run
                return true;
            }
            try {
                framer_.feed(std::string_view(buf, static_cast<size_t>(n)));
            } catch (const ProtocolError& e) {
                std::fprintf(stderr, "machd: varlink peer pid %d: %s, disconnecting\n", peer_.pid, e.what());
                return false;
            }
            if (static_cast<size_t>(n) < sizeof buf) return true;
        }
    }

    // Dispatches buffered calls while no call is outstanding.
    void process() {
        in_process_ = true;
        while (!busy_ && !dead_) {
            std::optional<std::string> message;
            try {
                message = framer_.next();
            } catch (const ProtocolError& e) {
                std::fprintf(stderr, "machd: varlink peer pid %d: %s, disconnecting\n", peer_.pid, e.what());
                dead_ = true;
                break;
            }
            if (!message) break;
            Call call;
            try {
                call = parse_call(*message);
            } catch (const ProtocolError& e) {
                std::fprintf(stderr, "machd: varlink peer pid %d: %s, disconnecting\n", peer_.pid, e.what());
                dead_ = true;
                break;
            }
            busy_ = !call.oneway;
            server_.dispatch(shared_from_this(), std::move(call));
        }
        in_process_ = false;
    }

    Server& server_;
    FdLoop& loop_;
    core::UniqueFd fd_;
    Peer peer_;
    Framer framer_;
    std::deque<Out> output_;
    std::string spare_;
    size_t output_bytes_ = 0;
    bool busy_ = false;      // a call waits for its final reply
    bool writable_ = false;  // EPOLLOUT requested
    bool eof_ = false;
    bool dead_ = false;
    bool in_process_ = false;
};

// ---------------------------------------------------------------------------------------- Request

Request::Request(std::weak_ptr<Connection> conn, Call call, Peer peer)
    : state_(std::make_shared<State>(State{std::move(conn), std::move(call), peer, false})) {}

void Request::send(std::string bytes, std::vector<core::UniqueFd> fds, bool final) {
    if (bytes.size() > kMessageMax + 1) {
        bytes = encode_error(kSystemError, Json{{"errno", ENOBUFS}, {"errnoName", "ENOBUFS"}});
        fds.clear();
        final = true;
    }
    queue(std::move(bytes), std::move(fds), final);
}

void Request::queue(std::string bytes, std::vector<core::UniqueFd> fds, bool final) {
    if (state_->done) return;
    if (final) state_->done = true;
    if (state_->call.oneway) return;
    if (auto c = state_->conn.lock()) c->queue(std::move(bytes), std::move(fds), final);
}

void Request::reply(const Json& parameters, std::vector<core::UniqueFd> fds) {
    send(encode_reply(parameters, false), std::move(fds), true);
}

void Request::notify(const Json& parameters) {
    if (!state_->call.more) return reply(parameters);
    send(encode_reply(parameters, true), {}, false);
}

void Request::reply_text(std::string_view parameters_json) {
    std::string bytes;
    bytes.reserve(parameters_json.size() + 16);
    bytes.append("{\"parameters\":").append(parameters_json).append("}");
    bytes.push_back('\0');
    send(std::move(bytes), {}, true);
}

void Request::reply_each(size_t count, const std::function<void(size_t, std::string&)>& write) {
    if (count == 0 || state_->done) return;
    if (!state_->call.more) count = 1;
    // Each batch is one string: one copy of each record and no allocation per record.
    std::string bytes;
    if (auto c = state_->conn.lock()) bytes = c->take_buffer();
    bytes.reserve(std::min(count * 384, kBatchReserve));
    for (size_t i = 0; i < count; i++) {
        bool last = i + 1 == count;
        size_t start = bytes.size();
        bytes.append("{\"parameters\":");
        try {
            write(i, bytes);
        } catch (...) {
            bytes.resize(start);
            if (!bytes.empty()) queue(std::move(bytes), {}, false);
            throw;
        }
        bytes.append(last ? "}" : ",\"continues\":true}");
        bytes.push_back('\0');
        if (bytes.size() - start > kMessageMax + 1) {
            bytes.resize(start);
            if (!bytes.empty()) queue(std::move(bytes), {}, false);
            return queue(encode_error(kSystemError, Json{{"errno", ENOBUFS}, {"errnoName", "ENOBUFS"}}), {}, true);
        }
        if (last) return queue(std::move(bytes), {}, true);
        if (bytes.size() >= kBatchBytes) {
            queue(std::move(bytes), {}, false);
            bytes.clear();
            bytes.reserve(kBatchReserve);
        }
    }
}

void Request::error(std::string_view name, const Json& parameters) { send(encode_error(name, parameters), {}, true); }

void Request::error_from_current_exception(Domain domain) {
    auto m = current_exception_to_varlink_error(domain);
    error(m.name, m.parameters);
}

// ----------------------------------------------------------------------------------------- Server

Server::Server(FdLoop& loop, ServiceInfo info) : loop_(loop), info_(std::move(info)) {}

Server::~Server() {
    for (auto& [fd, conn] : connections_) loop_.unwatch(fd);
    connections_.clear();
    for (auto& [fd, path] : listeners_) {
        loop_.unwatch(fd.get());
        ::unlink(path.c_str());
    }
}

void Server::add_interface(Interface iface) {
    std::string name = iface.name;
    interfaces_.insert_or_assign(std::move(name), std::move(iface));
}

void Server::listen(const std::string& path, mode_t mode) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path)
        throw std::system_error(ENAMETOOLONG, std::generic_category(), "varlink socket path " + path);
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    core::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) core::throw_last_error("socket");
    // A socket left by a previous machd would make bind() fail with EADDRINUSE; a live one (a running
    // systemd-machined, another machd) is not ours to take over.
    {
        core::UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0)
            throw std::system_error(EADDRINUSE, std::generic_category(), "another service listens on " + path);
    }
    if (::unlink(path.c_str()) < 0 && errno != ENOENT) core::throw_last_error("unlink " + path);
    // bind() creates the inode with the umask applied; set the final mode right after.
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) core::throw_last_error("bind " + path);
    if (::chmod(path.c_str(), mode) < 0) core::throw_last_error("chmod " + path);
    if (::listen(fd.get(), SOMAXCONN) < 0) core::throw_last_error("listen " + path);
    int raw = fd.get();
    listeners_.emplace_back(std::move(fd), path);
    loop_.watch(raw, [this, raw] { accept_on(raw); });
}

void Server::accept_on(int listen_fd) {
    for (;;) {
        core::UniqueFd fd(
            core::retry_eintr([&] { return ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK); }));
        if (!fd) {
            if (errno != EAGAIN) std::fprintf(stderr, "machd: varlink accept: %s\n", std::strerror(errno));
            return;
        }
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) continue;
        Peer peer{cred.uid, cred.gid, cred.pid};
        if (connections_.size() >= kConnectionsMax || per_uid_[peer.uid] >= kConnectionsPerUidMax) {
            std::fprintf(stderr, "machd: refusing varlink connection from uid %u: too many connections\n", peer.uid);
            continue;  // closing it is the only answer a client waiting for a reply understands
        }
        enlarge_send_buffer(fd.get());
        int raw = fd.get();
        auto conn = std::make_shared<Connection>(*this, loop_, std::move(fd), peer);
        connections_.emplace(raw, conn);
        per_uid_[peer.uid]++;
        std::weak_ptr<Connection> weak = conn;
        loop_.watch(raw, [weak] {
            if (auto c = weak.lock()) c->on_event();
        });
    }
}

void Server::drop(int fd) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) return;
    loop_.unwatch(fd);
    auto u = per_uid_.find(it->second->peer().uid);
    if (u != per_uid_.end() && --u->second == 0) per_uid_.erase(u);
    connections_.erase(it);
}

void Server::dispatch(const std::shared_ptr<Connection>& conn, Call call) {
    std::string iface(call.interface());
    std::string member(call.member());
    Request req(conn, std::move(call), conn->peer());
    const Call& c = req.call();
    if (iface == "org.varlink.service") {
        if (member == "GetInfo") {
            Json names = Json::array();
            names.push_back("org.varlink.service");
            for (const auto& [n, i] : interfaces_) names.push_back(n);
            return req.reply(Json{{"vendor", info_.vendor},
                                  {"product", info_.product},
                                  {"version", info_.version},
                                  {"url", info_.url},
                                  {"interfaces", names}});
        }
        if (member == "GetInterfaceDescription") {
            auto p = c.parameters.find("interface");
            if (p == c.parameters.end() || !p->is_string() || c.parameters.size() != 1)
                return req.error(kInvalidParameter, Json{{"parameter", "interface"}});
            std::string want = p->get<std::string>();
            if (want == "org.varlink.service") return req.reply(Json{{"description", std::string(idl::kOrgVarlinkService)}});
            auto i = interfaces_.find(want);
            if (i == interfaces_.end()) return req.error(kInterfaceNotFound, Json{{"interface", want}});
            return req.reply(Json{{"description", i->second.description}});
        }
        return req.error(kMethodNotFound, Json{{"method", c.method}});
    }
    auto i = interfaces_.find(iface);
    if (i == interfaces_.end()) return req.error(kInterfaceNotFound, Json{{"interface", iface}});
    auto m = i->second.methods.find(member);
    if (m == i->second.methods.end()) return req.error(kMethodNotFound, Json{{"method", c.method}});
    // No method of ours switches protocols (sd-varlink answers the same for such calls).
    if (c.upgrade) return req.error(kInvalidParameter, Json{{"parameter", "upgrade"}});
    if (m->second.requires_more && !c.more) return req.error(kExpectedMore);
    try {
        m->second.handler(req);
    } catch (...) {
        req.error_from_current_exception(i->second.domain);
    }
}

// ----------------------------------------------------------------------------------------- Client

Client::Client(const std::string& path) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) throw std::system_error(ENAMETOOLONG, std::generic_category(), path);
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    fd_ = core::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd_) core::throw_last_error("socket");
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) core::throw_last_error("connect " + path);
}

void Client::send(const Call& call) {
    std::string bytes = encode_call(call);
    size_t off = 0;
    while (off < bytes.size()) {
        ssize_t n =
            core::retry_eintr([&] { return ::send(fd_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL); });
        if (n < 0) core::throw_last_error("send");
        off += static_cast<size_t>(n);
    }
}

Json Client::receive(std::vector<core::UniqueFd>* fds) {
    std::string msg = receive_raw_keeping_fds();
    Json j = Json::parse(msg, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw ProtocolError("reply is not a JSON object");
    if (fds)
        while (!pending_fds_.empty()) {
            fds->push_back(std::move(pending_fds_.front()));
            pending_fds_.pop_front();
        }
    return j;
}

std::string Client::receive_raw() {
    std::string msg = receive_raw_keeping_fds();
    pending_fds_.clear();
    return msg;
}

std::string Client::receive_raw_keeping_fds() {
    for (;;) {
        if (auto msg = framer_.next()) return std::move(*msg);
        char buf[65536];
        std::vector<core::UniqueFd> fds;
        ssize_t n = core::retry_eintr([&] { return receive_with_fds(fd_.get(), buf, sizeof buf, 0, fds); });
        if (n < 0) core::throw_last_error("recvmsg");
        for (auto& f : fds) pending_fds_.push_back(std::move(f));
        if (n == 0) throw std::system_error(ECONNRESET, std::generic_category(), "varlink server closed the connection");
        framer_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
}

}  // namespace mk::varlink
