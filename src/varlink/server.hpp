// A Varlink server on AF_UNIX stream sockets, driven by machd's one loop through the FdLoop seam.
// Owns its listening sockets and connections (RAII). Thread-hostile.
//
// Per connection one call is handled at a time, as sd-varlink does: the next call is parsed only
// after the current one got its final reply (or at once for oneway calls), so replies stay in order
// even when a method answers later from the loop (Open login, CopyTo). Limits: kMessageMax per
// message in and out, kConnectionsMax connections, kConnectionsPerUidMax per peer UID, and
// kOutputMax queued output per connection (a peer that stops reading is dropped, never waited on).
// Errors: handler exceptions become Varlink errors through varlink/errors.hpp; a malformed message
// or an I/O error ends that connection only.
#pragma once

#include <sys/types.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/unique_fd.hpp"
#include "varlink/errors.hpp"
#include "varlink/protocol.hpp"

namespace mk::varlink {

inline constexpr size_t kConnectionsMax = 512;
inline constexpr size_t kConnectionsPerUidMax = 128;
inline constexpr size_t kOutputMax = 64u << 20;
inline constexpr size_t kFdsPerReplyMax = 16;

// The loop the server runs in: call `on_event` when `fd` is readable or hung up, and, while
// set_writable(fd, true), also when it is writable.
struct FdLoop {
    virtual ~FdLoop() = default;
    virtual void watch(int fd, std::function<void()> on_event) = 0;
    virtual void unwatch(int fd) = 0;
    virtual void set_writable(int fd, bool want) = 0;
};

// The peer of a connection as the kernel saw it at connect() (SO_PEERCRED), never from the message.
struct Peer {
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    pid_t pid = 0;
};

class Connection;

// The answer side of one call. Copyable; after the final reply (or after the connection is gone)
// further answers are ignored. A handler either answers before it returns or keeps a copy and
// answers later from the loop.
class Request {
public:
    Request(std::weak_ptr<Connection> conn, Call call, Peer peer);

    [[nodiscard]] const Call& call() const noexcept { return state_->call; }
    [[nodiscard]] const Json& parameters() const noexcept { return state_->call.parameters; }
    [[nodiscard]] const Peer& peer() const noexcept { return state_->peer; }
    [[nodiscard]] bool more() const noexcept { return state_->call.more; }

    // The final reply; `fds` go with it as SCM_RIGHTS (the parameters name them by index).
    void reply(const Json& parameters, std::vector<core::UniqueFd> fds = {});
    // One of several replies to a call with `more` (continues: true). Requires more().
    void notify(const Json& parameters);
    // The final reply with its parameters already serialized (one JSON object; json_writer.hpp).
    void reply_text(std::string_view parameters_json);
    // `count` replies (count >= 1) serialized in place, for replies made by the thousand: `write(i,
    // out)` appends the parameters of reply i (one JSON object) to `out`; all but the last carry
    // continues. They are queued in large batches, not one message at a time. Without more only
    // reply 0 is made, as the final one. An exception from `write` is rethrown after the replies
    // completed before it are queued (the caller's error then ends the call, as sd-varlink's does).
    void reply_each(size_t count, const std::function<void(size_t, std::string&)>& write);
    void error(std::string_view name, const Json& parameters = Json::object());
    // The current exception as a Varlink error (varlink/errors.hpp).
    void error_from_current_exception(Domain domain = Domain::machine);
    [[nodiscard]] bool answered() const noexcept { return state_->done; }

private:
    struct State {
        std::weak_ptr<Connection> conn;
        Call call;
        Peer peer;
        bool done = false;
    };
    void send(std::string bytes, std::vector<core::UniqueFd> fds, bool final);
    // Queues complete messages as they are (each already checked against kMessageMax).
    void queue(std::string bytes, std::vector<core::UniqueFd> fds, bool final);
    std::shared_ptr<State> state_;
};

using Method = std::function<void(Request&)>;

struct MethodInfo {
    Method handler;
    bool supports_more = false;  // more is accepted (else the flag is ignored, as sd-varlink does)
    bool requires_more = false;  // without more: org.varlink.service.ExpectedMore
};

struct Interface {
    std::string name;         // "io.systemd.Machine"
    std::string description;  // its IDL, returned by GetInterfaceDescription
    std::map<std::string, MethodInfo, std::less<>> methods;
    Domain domain = Domain::machine;  // whose names MachineErrc codes take
};

struct ServiceInfo {
    std::string vendor, product, version, url;
};

class Server {
public:
    Server(FdLoop& loop, ServiceInfo info);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // org.varlink.service is always served; add the rest before listen().
    void add_interface(Interface iface);

    // Binds and listens on `path` (mode `mode`, replacing a stale socket there). Throws
    // std::system_error.
    void listen(const std::string& path, mode_t mode);

    [[nodiscard]] size_t connection_count() const noexcept { return connections_.size(); }

    // Internal (Connection): dispatches one parsed call.
    void dispatch(const std::shared_ptr<Connection>& conn, Call call);
    void drop(int fd);

private:
    void accept_on(int listen_fd);

    FdLoop& loop_;
    ServiceInfo info_;
    std::map<std::string, Interface, std::less<>> interfaces_;
    std::vector<std::pair<core::UniqueFd, std::string>> listeners_;  // fd, path (unlinked at the end)
    std::map<int, std::shared_ptr<Connection>> connections_;
    std::map<uid_t, size_t> per_uid_;
};

// A blocking client for tests and the bench: connect(), call(), read replies.
class Client {
public:
    explicit Client(const std::string& path);
    // Sends a call. With oneway nothing comes back.
    void send(const Call& call);
    // The next reply message, parsed; fds received with it are appended to `fds` if given.
    Json receive(std::vector<core::UniqueFd>* fds = nullptr);
    // The next message as received (without its NUL), unparsed; fds are dropped.
    std::string receive_raw();
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    // Received bytes not yet returned by receive().
    [[nodiscard]] bool buffered() const noexcept { return !framer_.empty(); }

private:
    std::string receive_raw_keeping_fds();
    core::UniqueFd fd_;
    Framer framer_;
    std::deque<core::UniqueFd> pending_fds_;
};

}  // namespace mk::varlink
