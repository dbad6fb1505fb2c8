// The systemd version of a guest tree, read the way systemd-nspawn reads it: from the name of the
// versioned `libsystemd-shared-NNN.so` the tree ships, or, when there is none (a static or renamed
// build), from the start-up banner compiled into the systemd binary ("systemd 262.1-1 running in
// %ssystem mode"). spawn needs it because systemd >= 258 refuses to boot on cgroup v1 (hybrid
// included), so the guest's cgroup layout has to follow the guest (see plan_guest_cgroups()).
//
// The parsers are pure and take bytes from the untrusted tree; guest_systemd_version() reads the
// tree fd-relative (openat2 RESOLVE_IN_ROOT: the tree's symlinks resolve inside it, never out of
// it) and never executes anything from it. Thread-compatible; no global state.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mk::core {

// The major version in a libsystemd-shared file name: "libsystemd-shared-262.so" -> 262, also
// distribution tags such as "libsystemd-shared-257.5-1.so" -> 257. nullopt for anything else.
std::optional<unsigned> systemd_version_from_shared_lib_name(std::string_view file_name);

// Finds systemd's banner "systemd <version> running in " in bytes fed piece by piece (a binary
// read in chunks); the banner may straddle two pieces. Keeps at most a few dozen bytes between
// calls, whatever the input size.
class SystemdBannerScanner {
public:
    void feed(std::string_view bytes);
    // The major version of the first banner seen, if any.
    [[nodiscard]] std::optional<unsigned> version() const { return version_; }

private:
    void scan(std::string_view text);
    std::string carry_;  // the tail of the previous piece that could still start a banner
    std::optional<unsigned> version_;
};

// systemd_version_from_banner(bytes) == feeding `bytes` in one piece.
std::optional<unsigned> systemd_version_from_banner(std::string_view bytes);

// Where nspawn looks for the shared library (relative to the tree's root; "*" is a directory
// whose name contains "-linux-", Debian's multiarch directories), and where the systemd binary
// lives. "/lib/*-linux-*/systemd" is ours: it finds the library when the fd given is an image's
// own /usr partition rather than the root. Exposed for the documentation and tests.
inline constexpr std::string_view kSharedLibDirs[] = {"/lib/systemd",           "/lib64/systemd",
                                                      "/lib/*-linux-*/systemd", "/usr/lib/*-linux-*/systemd",
                                                      "/usr/lib/systemd",       "/usr/lib64/systemd"};
inline constexpr std::string_view kSystemdBinaries[] = {"/usr/lib/systemd/systemd", "/lib/systemd/systemd"};
// The binary fallback reads at most this much of the file.
inline constexpr size_t kBannerScanMax = 32u << 20;

// The guest's systemd major version, or nullopt if the tree has no recognisable systemd.
// `root_fd` is an O_PATH or O_DIRECTORY fd of the tree. With several libraries (a half-finished
// upgrade) the highest version wins. Never throws for what the tree contains.
std::optional<unsigned> guest_systemd_version(int root_fd);

}  // namespace mk::core
