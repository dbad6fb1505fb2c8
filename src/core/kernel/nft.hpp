// nf_tables set elements over NETLINK_NETFILTER: the only nftables operation spawn does itself on
// the fast path (adding and removing a machine's NAT and port-forwarding entries). Rules, sets and
// chains are made by the machkit-nft helper (libnftables), once per network namespace.
// Thread-compatible; each call opens and closes its own socket.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/unique_fd.hpp"

namespace mk::core {

struct NftElement {
    std::string set;            // set or map name in the table
    std::vector<uint8_t> key;   // in register layout (each concatenated field padded to 4 bytes)
    std::vector<uint8_t> data;  // map value, empty for plain sets
    std::string comment;        // shown by `nft list` (libnftnl's user data TLV)
};

// One nfnetlink batch (BEGIN, one NEWSETELEM/DELSETELEM per element, END) for table `table` of
// family inet. Pure: returns the bytes; `seq` numbers the messages from seq on.
std::vector<uint8_t> nft_element_batch(bool add, std::string_view table, const std::vector<NftElement>& elems, uint32_t seq);

// A NETLINK_NETFILTER socket (invalid fd and errno set on failure).
UniqueFd nft_open_socket();

// Sends the batch on `fd` and waits for every ACK. Returns 0, or the first error (a positive
// errno: ENOENT when the table or a set does not exist). The batch is all-or-nothing.
int nft_apply_elements(int fd, bool add, std::string_view table, const std::vector<NftElement>& elems);

// Closes an nfnetlink socket without waiting. Why: releasing the last reference to a bound
// nfnetlink socket makes nf_tables flush its queue of objects to destroy (NETLINK_URELEASE ->
// nf_tables_trans_destroy_flush_work), i.e. wait for an RCU grace period (~15 ms here) whenever a
// transaction deleted something. A short-lived grandchild holds the last reference instead; it
// keeps no other fd of ours. Falls back to a plain close if it cannot fork.
void nft_close_in_background(UniqueFd fd);

}  // namespace mk::core
