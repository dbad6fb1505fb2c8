// machkit-nft: spawn's nftables helper. spawn is linked statically and libnftables exists only as
// a shared library, so the two operations that need nft's parser run here (docs/networking.md):
//
//   machkit-nft init < script        apply the script (the "inet machkit" table); the caller holds
//                                    /run/machkit/nft.lock
//   machkit-nft gc RECORDS MARKER    after MACHKIT_NFT_GC_DELAY seconds (default 2), under the lock:
//                                    if no machine has a record in RECORDS any more, delete the
//                                    table; then remove MARKER
//
// Adding and removing a machine's elements is done by spawn itself over nfnetlink (fast path).
#include <dirent.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <string>

#include "core/base/io.hpp"

namespace {

bool run(const std::string& cmd, bool quiet) {
    nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!ctx) {
        fprintf(stderr, "machkit-nft: cannot create an nftables context\n");
        return false;
    }
    if (quiet) nft_ctx_buffer_error(ctx);
    bool ok = nft_run_cmd_from_buffer(ctx, cmd.c_str()) == 0;
    nft_ctx_free(ctx);
    return ok;
}

bool dir_has_entries(const char* path) {
    DIR* d = opendir(path);
    if (!d) return false;
    bool any = false;
    while (dirent* de = readdir(d))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) any = true;
    closedir(d);
    return any;
}

}  // namespace

int main(int argc, char** argv) {
    std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "init" && argc == 2) {
        std::string script((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
        return run(script, false) ? 0 : 1;
    }
    if (mode == "gc" && argc == 4) {
        const char* delay = getenv("MACHKIT_NFT_GC_DELAY");
        unsigned secs = delay ? static_cast<unsigned>(strtoul(delay, nullptr, 10)) : 2;
        if (secs > 3600) secs = 3600;
        if (secs) sleep(secs);
        int lock = open("/run/machkit/nft.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (lock >= 0) (void)mk::core::retry_eintr([&] { return flock(lock, LOCK_EX); });
        if (!dir_has_entries(argv[2])) {
            rmdir(argv[2]);
            run("delete table inet machkit", true);  // fails harmlessly when it is gone already
        }
        unlink(argv[3]);
        return 0;
    }
    fprintf(stderr, "usage: machkit-nft init < script | machkit-nft gc RECORDS-DIR MARKER\n");
    return 2;
}
