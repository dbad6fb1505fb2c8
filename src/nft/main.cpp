// machkit-nft: runs spawn's nftables scripts with libnftables. spawn is linked statically and
// libnftables exists only as a shared library, so spawn hands its script to this small helper on
// stdin (see docs/networking.md).
//
//   machkit-nft setup MACHINE < script     sweep stale machines' chains, then apply the script
//   machkit-nft teardown MACHINE < script  apply the script, then delete the table if it is empty
//
// Every run holds /run/machkit/nft.lock, so "is the table empty? delete it" cannot race with another
// spawn adding its chains.
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>

namespace {

struct Nft {
    nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    ~Nft() { nft_ctx_free(ctx); }
    // Runs `cmd`; returns its output, or false with the error text in `err`.
    bool run(const std::string& cmd, std::string* out, std::string* err) {
        nft_ctx_buffer_output(ctx);
        nft_ctx_buffer_error(ctx);
        int r = nft_run_cmd_from_buffer(ctx, cmd.c_str());
        if (out) *out = nft_ctx_get_output_buffer(ctx);
        if (err) *err = nft_ctx_get_error_buffer(ctx);
        return r == 0;
    }
};

// The spawn of MACHINE still runs while it holds its abstract socket name (launcher.cpp,
// take_name_lock). Abstract names live in the network namespace: we run in spawn's.
bool machine_running(const std::string& name) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return true;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string key = "machkit/spawn/" + name;
    if (key.size() + 1 > sizeof sa.sun_path) {
        close(fd);
        return true;
    }
    std::memcpy(sa.sun_path + 1, key.data(), key.size());
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + key.size());
    bool running = bind(fd, reinterpret_cast<sockaddr*>(&sa), len) < 0 && errno == EADDRINUSE;
    close(fd);
    return running;
}

// Chain names "m-NAME-pre|out|post" of the table, one per line of `nft list table`.
std::set<std::string> machines_in_table(Nft& nft) {
    std::set<std::string> out;
    std::string text;
    if (!nft.run("list table inet machkit", &text, nullptr)) return out;
    std::istringstream in(text);
    std::string word, prev;
    while (in >> word) {
        if (prev == "chain" && word.starts_with("m-")) {
            for (const char* suf : {"-pre", "-out", "-post"})
                if (word.ends_with(suf)) out.insert(word.substr(2, word.size() - 2 - strlen(suf)));
        }
        prev = word;
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: machkit-nft setup|teardown MACHINE < script\n");
        return 2;
    }
    std::string mode = argv[1], machine = argv[2];
    std::string script((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());

    if (mkdir("/run/machkit", 0755) < 0 && errno != EEXIST) perror("mkdir /run/machkit");
    int lock = open("/run/machkit/nft.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock >= 0) flock(lock, LOCK_EX);

    Nft nft;
    if (!nft.ctx) {
        fprintf(stderr, "machkit-nft: cannot create an nftables context\n");
        return 1;
    }
    std::string err;
    if (mode == "setup") {
        // Chains of machines whose spawn was killed (nothing ran their teardown).
        std::string sweep;
        for (const auto& m : machines_in_table(nft))
            if (m != machine && !machine_running(m))
                for (const char* ch : {"pre", "out", "post"})
                    sweep += "flush chain inet machkit m-" + m + "-" + ch + "\ndelete chain inet machkit m-" + m + "-" + ch + "\n";
        if (!sweep.empty() && !nft.run(sweep, nullptr, &err)) fprintf(stderr, "machkit-nft: sweep: %s", err.c_str());
        if (!nft.run(script, nullptr, &err)) {
            fprintf(stderr, "machkit-nft: %s", err.c_str());
            return 1;
        }
        return 0;
    }
    if (mode == "teardown") {
        bool ok = nft.run(script, nullptr, &err);
        if (!ok) fprintf(stderr, "machkit-nft: %s", err.c_str());
        if (machines_in_table(nft).empty()) {
            std::string text;
            // Only when nothing else (no chain at all) is left in it.
            if (nft.run("list table inet machkit", &text, nullptr) && text.find("chain ") == std::string::npos)
                nft.run("delete table inet machkit", nullptr, nullptr);
        }
        return ok ? 0 : 1;
    }
    fprintf(stderr, "machkit-nft: unknown mode %s\n", mode.c_str());
    return 2;
}
