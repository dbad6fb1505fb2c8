#include "core/spawn/guest_systemd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "core/base/fs_at.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {
namespace {

constexpr std::string_view kLibPrefix = "libsystemd-shared-";
constexpr std::string_view kBannerHead = "systemd ";
constexpr std::string_view kBannerTail = " running in ";
// Longer "versions" are not systemd's: "262.1-1", "257.5-1~bpo12+1", "252.39-1~deb12u2".
constexpr size_t kMaxVersionChars = 64;
constexpr size_t kMaxBanner = kBannerHead.size() + kMaxVersionChars + kBannerTail.size();
constexpr size_t kMaxMajorDigits = 6;
// An untrusted tree may hold huge directories: look at this many entries at most.
constexpr size_t kMaxDirEntries = 65536;
constexpr size_t kMaxMultiarchDirs = 64;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_version_char(char c) {
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' || c == '~' || c == '+' ||
           c == '_';
}

// Leading decimal digits of `s` as a major version: 1..kMaxMajorDigits digits, value > 0.
std::optional<unsigned> parse_major(std::string_view s, size_t* used) {
    size_t n = 0;
    unsigned v = 0;
    while (n < s.size() && is_digit(s[n])) {
        if (n == kMaxMajorDigits) return std::nullopt;
        v = v * 10 + static_cast<unsigned>(s[n] - '0');
        n++;
    }
    if (n == 0 || v == 0) return std::nullopt;
    *used = n;
    return v;
}

// Calls fn(name) for the entries of the directory `dir_fd` (not consumed), at most kMaxDirEntries.
template <typename Fn>
void for_each_entry(int dir_fd, Fn fn) {
    int copy = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (copy < 0) return;
    DIR* d = fdopendir(copy);
    if (!d) {
        close(copy);
        return;
    }
    size_t seen = 0;
    while (dirent* e = readdir(d)) {
        if (++seen > kMaxDirEntries) break;
        fn(std::string_view(e->d_name));
    }
    closedir(d);
}

std::optional<unsigned> version_in_dir(int root_fd, const std::string& dir) {
    UniqueFd fd = open_in_root(root_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!fd) return std::nullopt;
    std::optional<unsigned> best;
    for_each_entry(fd.get(), [&](std::string_view name) {
        if (auto v = systemd_version_from_shared_lib_name(name); v && (!best || *v > *best)) best = v;
    });
    return best;
}

std::optional<unsigned> version_from_binary(int root_fd, std::string_view path) {
    // O_NONBLOCK: a FIFO planted at the path must not hang spawn; only regular files are read.
    UniqueFd fd = open_in_root(root_fd, path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (!fd) return std::nullopt;
    struct stat st {};
    if (fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    SystemdBannerScanner scanner;
    std::string buf(1u << 20, '\0');
    size_t total = 0;
    while (total < kBannerScanMax && !scanner.version()) {
        ssize_t n = retry_eintr([&] { return read(fd.get(), buf.data(), std::min(buf.size(), kBannerScanMax - total)); });
        if (n <= 0) break;
        total += static_cast<size_t>(n);
        scanner.feed(std::string_view(buf.data(), static_cast<size_t>(n)));
    }
    return scanner.version();
}

}  // namespace

std::optional<unsigned> systemd_version_from_shared_lib_name(std::string_view name) {
    if (!name.starts_with(kLibPrefix) || !name.ends_with(".so")) return std::nullopt;
    std::string_view v = name.substr(kLibPrefix.size());
    if (v.size() < 3) return std::nullopt;
    v.remove_suffix(3);
    size_t used = 0;
    auto major = parse_major(v, &used);
    if (!major) return std::nullopt;
    std::string_view rest = v.substr(used);
    // "262.1", "257.5-1", "262~rc1": a separator, never more digits glued to a letter ("262abc").
    if (!rest.empty() && rest[0] != '.' && rest[0] != '-' && rest[0] != '~' && rest[0] != '+' && rest[0] != '_')
        return std::nullopt;
    if (rest.size() > kMaxVersionChars || !std::all_of(rest.begin(), rest.end(), is_version_char)) return std::nullopt;
    return major;
}

void SystemdBannerScanner::scan(std::string_view text) {
    for (size_t at = text.find(kBannerHead); at != std::string_view::npos; at = text.find(kBannerHead, at + 1)) {
        std::string_view rest = text.substr(at + kBannerHead.size());
        size_t used = 0;
        auto major = parse_major(rest, &used);
        if (!major) continue;
        size_t end = used;
        while (end < rest.size() && end < kMaxVersionChars && is_version_char(rest[end])) end++;
        if (rest.substr(end, kBannerTail.size()) == kBannerTail) {
            version_ = major;
            return;
        }
    }
}

void SystemdBannerScanner::feed(std::string_view bytes) {
    if (version_ || bytes.empty()) return;
    // A banner is at most kMaxBanner bytes long: one that straddles the previous piece starts in
    // its last kMaxBanner - 1 bytes, which carry_ holds.
    if (carry_.empty()) {
        scan(bytes);
    } else {
        std::string joined = carry_;
        joined.append(bytes.substr(0, std::min(bytes.size(), kMaxBanner)));
        scan(joined);
        if (!version_) scan(bytes);
    }
    if (version_) return;
    std::string tail = carry_;
    tail.append(bytes.substr(bytes.size() - std::min(bytes.size(), kMaxBanner - 1)));
    carry_ = tail.substr(tail.size() - std::min(tail.size(), kMaxBanner - 1));
}

std::optional<unsigned> systemd_version_from_banner(std::string_view bytes) {
    SystemdBannerScanner s;
    s.feed(bytes);
    return s.version();
}

std::optional<unsigned> guest_systemd_version(int root_fd) {
    std::optional<unsigned> best;
    auto consider = [&](std::optional<unsigned> v) {
        if (v && (!best || *v > *best)) best = v;
    };
    for (std::string_view pattern : kSharedLibDirs) {
        size_t star = pattern.find('*');
        if (star == std::string_view::npos) {
            consider(version_in_dir(root_fd, std::string(pattern)));
            continue;
        }
        // "/usr/lib/*-linux-*/systemd": the multiarch directories.
        std::string parent(pattern.substr(0, star));
        UniqueFd lib = open_in_root(root_fd, parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (!lib) continue;
        std::vector<std::string> arches;
        for_each_entry(lib.get(), [&](std::string_view name) {
            if (arches.size() < kMaxMultiarchDirs && name.find("-linux-") != std::string_view::npos)
                arches.emplace_back(name);
        });
        for (const auto& a : arches) consider(version_in_dir(root_fd, parent + a + "/systemd"));
    }
    if (best) return best;
    for (std::string_view bin : kSystemdBinaries)
        if (auto v = version_from_binary(root_fd, bin)) return v;
    return std::nullopt;
}

}  // namespace mk::core
