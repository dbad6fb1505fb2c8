#include "core/kernel/nft.hpp"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"
#include "core/kernel/netlink.hpp"

namespace mk::core {
namespace {

void append(std::vector<uint8_t>& out, const NlMessage& m) { out.insert(out.end(), m.data(), m.data() + m.size()); }

NlMessage batch_marker(uint16_t type, uint32_t seq) {
    NlMessage m(type, 0);
    auto& g = m.put_header<nfgenmsg>();
    g.nfgen_family = AF_UNSPEC;
    g.version = NFNETLINK_V0;
    g.res_id = htons(NFNL_SUBSYS_NFTABLES);
    m.set_seq(seq);
    return m;
}

}  // namespace

std::vector<uint8_t> nft_element_batch(bool add, std::string_view table, const std::vector<NftElement>& elems,
                                       uint32_t seq) {
    std::vector<uint8_t> out;
    append(out, batch_marker(NFNL_MSG_BATCH_BEGIN, seq++));
    for (const auto& e : elems) {
        auto type = static_cast<uint16_t>(NFNL_SUBSYS_NFTABLES << 8 | (add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM));
        NlMessage m(type, static_cast<uint16_t>(NLM_F_ACK | (add ? NLM_F_CREATE : 0)));
        auto& g = m.put_header<nfgenmsg>();
        g.nfgen_family = NFPROTO_INET;
        g.version = NFNETLINK_V0;
        m.put_string(NFTA_SET_ELEM_LIST_TABLE, table);
        m.put_string(NFTA_SET_ELEM_LIST_SET, e.set);
        size_t list = m.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
        size_t el = m.begin_nest(NFTA_LIST_ELEM | NLA_F_NESTED);
        size_t key = m.begin_nest(NFTA_SET_ELEM_KEY | NLA_F_NESTED);
        m.put(NFTA_DATA_VALUE, e.key.data(), e.key.size());
        m.end_nest(key);
        if (add && !e.data.empty()) {
            size_t data = m.begin_nest(NFTA_SET_ELEM_DATA | NLA_F_NESTED);
            m.put(NFTA_DATA_VALUE, e.data.data(), e.data.size());
            m.end_nest(data);
        }
        if (add && !e.comment.empty() && e.comment.size() < 254) {
            // libnftnl's udata TLV: type NFTNL_UDATA_SET_ELEM_COMMENT (0), length, NUL-terminated text.
            std::vector<uint8_t> ud{0, static_cast<uint8_t>(e.comment.size() + 1)};
            ud.insert(ud.end(), e.comment.begin(), e.comment.end());
            ud.push_back(0);
            m.put(NFTA_SET_ELEM_USERDATA, ud.data(), ud.size());
        }
        m.end_nest(el);
        m.end_nest(list);
        m.set_seq(seq++);
        append(out, m);
    }
    append(out, batch_marker(NFNL_MSG_BATCH_END, seq));
    return out;
}

UniqueFd nft_open_socket() {
    UniqueFd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER));
    if (!fd) return fd;
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) return UniqueFd();
    return fd;
}

int nft_apply_elements(int fd, bool add, std::string_view table, const std::vector<NftElement>& elems) {
    if (elems.empty()) return 0;
    if (fd < 0) return EBADF;
    static uint32_t next_seq = 1;
    const uint32_t seq0 = next_seq;
    next_seq += static_cast<uint32_t>(elems.size()) + 2;
    std::vector<uint8_t> b = nft_element_batch(add, table, elems, seq0);
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (sendto(fd, b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) return errno;
    // One reply per element message (an ACK, or its error if the batch failed).
    std::set<uint32_t> pending;
    for (uint32_t i = 0; i < elems.size(); i++) pending.insert(seq0 + 1 + i);
    int first_error = 0;
    alignas(nlmsghdr) char buf[8192];
    while (!pending.empty()) {
        ssize_t n = retry_eintr([&] { return recv(fd, buf, sizeof buf, first_error ? MSG_DONTWAIT : 0); });
        if (n < 0) {
            if (errno == EAGAIN) break;  // after an error the kernel may not ack the rest
            return first_error ? first_error : errno;
        }
        int len = static_cast<int>(n);
        for (auto* r = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(r, len); r = NLMSG_NEXT(r, len)) {
            if (r->nlmsg_type != NLMSG_ERROR) continue;
            int err = -static_cast<nlmsgerr*>(NLMSG_DATA(r))->error;
            if (err && !first_error) first_error = err;
            pending.erase(r->nlmsg_seq);
        }
    }
    // Drain late replies of a failed batch, so the next batch on this socket starts clean.
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
    return first_error;
}

void nft_close_in_background(UniqueFd fd) {
    if (!fd) return;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return;  // fd closes here, synchronously
    UniqueFd rd(p[0]), wr(p[1]);
    pid_t child = fork();
    if (child < 0) return;
    if (child == 0) {
        // Keep only the socket and the pipe's read end: no lock, pty or name socket of spawn's may
        // outlive it in here. The parent waits for this process, so that holds before it goes on.
        int keep[2] = {fd.get() < rd.get() ? fd.get() : rd.get(), fd.get() < rd.get() ? rd.get() : fd.get()};
        syscall(SYS_close_range, 0u, static_cast<unsigned>(keep[0] - 1), 0u);
        syscall(SYS_close_range, static_cast<unsigned>(keep[0] + 1), static_cast<unsigned>(keep[1] - 1), 0u);
        syscall(SYS_close_range, static_cast<unsigned>(keep[1] + 1), ~0u, 0u);
        if (fork() == 0) {
            char c;
            // EOF once the parent has dropped its reference: ours is the last one then.
            retry_eintr([&] { return read(rd.get(), &c, 1); });
            _exit(0);
        }
        _exit(0);
    }
    int st;
    retry_eintr([&] { return waitpid(child, &st, 0); });
    fd.reset();
    wr.reset();
}

}  // namespace mk::core
