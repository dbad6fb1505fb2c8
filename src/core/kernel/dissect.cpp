#include "core/kernel/dissect.hpp"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include "core/base/error.hpp"

namespace mk::core {
namespace {

uint64_t le64(std::string_view s, size_t off) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | static_cast<unsigned char>(s[off + static_cast<size_t>(i)]);
    return v;
}
uint32_t le32(std::string_view s, size_t off) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | static_cast<unsigned char>(s[off + static_cast<size_t>(i)]);
    return v;
}

// A GPT type GUID as stored on disk (first three fields little-endian) from its text form.
std::string guid_bytes(std::string_view text) {
    std::string hex;
    for (char c : text)
        if (c != '-') hex += c;
    auto byte = [&](size_t i) { return static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16)); };
    std::string out;
    for (size_t i : {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15}) out += byte(i);
    return out;
}

struct KnownType {
    const char* guid;
    const char* mount_point;
};
// The Discoverable Partitions Specification's x86-64 types.
constexpr KnownType kTypes[] = {
    {"4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "/"},     {"8484680c-9521-48c6-9c11-b0720656f69e", "/usr"},
    {"933ac7e1-2eb4-4f13-b844-0e14e2aef915", "/home"}, {"3b8f8425-20e0-4f3b-907f-1a25a76f98e8", "/srv"},
    {"4d21b016-b534-45c2-a9fb-5c16e091fd2d", "/var"},
};

}  // namespace

std::optional<std::vector<Partition>> parse_gpt(std::string_view head, uint64_t image_size) {
    constexpr size_t kSector = 512;
    if (head.size() < 2 * kSector || head.substr(kSector, 8) != "EFI PART") return std::nullopt;
    std::string_view h = head.substr(kSector);
    uint32_t header_size = le32(h, 12);
    uint64_t entries_lba = le64(h, 72);
    uint32_t count = le32(h, 80);
    uint32_t entry_size = le32(h, 84);
    if (header_size < 92 || header_size > kSector || entry_size < 128 || entry_size > 4096 || count > 1024)
        return std::nullopt;
    uint64_t start = entries_lba * kSector;
    if (start > head.size() || static_cast<uint64_t>(count) * entry_size > head.size() - start) return std::nullopt;
    std::vector<Partition> out;
    for (uint32_t i = 0; i < count; i++) {
        std::string_view e = head.substr(start + static_cast<uint64_t>(i) * entry_size, entry_size);
        std::string_view type = e.substr(0, 16);
        uint64_t first = le64(e, 32), last = le64(e, 40);
        if (type == std::string(16, '\0') || last < first) continue;
        uint64_t off = first * kSector, size = (last - first + 1) * kSector;
        if (off > image_size || size > image_size - off) continue;
        for (const auto& t : kTypes) {
            if (type != guid_bytes(t.guid)) continue;
            bool seen = false;
            for (const auto& p : out) seen = seen || p.mount_point == t.mount_point;
            if (!seen) out.push_back({t.mount_point, off, size});  // the first of each kind wins
        }
    }
    return out;
}

std::string detect_fs_type(std::string_view d) {
    auto at = [&](size_t off, std::string_view magic) {
        return d.size() >= off + magic.size() && d.substr(off, magic.size()) == magic;
    };
    if (at(1080, "\x53\xEF")) return "ext4";
    if (at(0, "XFSB")) return "xfs";
    if (at(65600, "_BHRfS_M")) return "btrfs";
    if (at(0, "hsqs")) return "squashfs";
    if (at(1024, "\xE2\xE1\xF5\xE0")) return "erofs";
    if (at(82, "FAT32   ") || at(54, "FAT16   ") || at(54, "FAT12   ")) return "vfat";
    return {};
}

std::string attach_loop(int image_fd, uint64_t offset, uint64_t size, bool read_only, UniqueFd& fd) {
    UniqueFd ctl(open("/dev/loop-control", O_RDWR | O_CLOEXEC));
    if (!ctl) throw_last_error("cannot open /dev/loop-control");
    for (int attempt = 0; attempt < 64; attempt++) {
        int n = ioctl(ctl.get(), LOOP_CTL_GET_FREE);
        if (n < 0) throw_last_error("no free loop device");
        std::string dev = "/dev/loop" + std::to_string(n);
        UniqueFd d(open(dev.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
        if (!d) throw_last_error("cannot open " + dev);
        loop_config cfg{};
        cfg.fd = static_cast<uint32_t>(image_fd);
        cfg.info.lo_offset = offset;
        cfg.info.lo_sizelimit = size;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (read_only ? LO_FLAGS_READ_ONLY : 0);
        if (ioctl(d.get(), LOOP_CONFIGURE, &cfg) == 0) {
            fd = std::move(d);
            return dev;
        }
        if (errno != EBUSY) throw_last_error("cannot set up " + dev);  // EBUSY: someone took it first
    }
    throw_errno(EBUSY, "no loop device could be set up");
}

DissectedImage dissect_image(const std::string& path, bool read_only) {
    DissectedImage img;
    UniqueFd f(open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!f && !read_only && (errno == EACCES || errno == EROFS || errno == EPERM)) {
        f.reset(open(path.c_str(), O_RDONLY | O_CLOEXEC));
        read_only = true;
    }
    if (!f) throw UsageError("cannot open image " + path + ": " + strerror(errno));
    struct stat st;
    if (fstat(f.get(), &st) < 0) throw_last_error("stat " + path);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) throw UsageError(path + " is not a disk image file or block device");
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (S_ISBLK(st.st_mode)) size = static_cast<uint64_t>(lseek(f.get(), 0, SEEK_END));
    img.read_only = read_only;

    std::string head(1 << 20, '\0');  // GPT header and up to 128 KiB of entries
    ssize_t n = pread(f.get(), head.data(), head.size(), 0);
    if (n < 0) throw_last_error("cannot read " + path);
    head.resize(static_cast<size_t>(n));

    std::vector<Partition> parts;
    if (auto gpt = parse_gpt(head, size)) {
        parts = *gpt;
        bool has_root = false;
        for (const auto& p : parts) has_root = has_root || p.mount_point == "/";
        if (!has_root)
            throw UsageError(path +
                             " has a GPT but no root partition for x86-64 (type 4f68bce3-e8cd-4db1-96e7-fbcaf984b709)");
        std::stable_partition(parts.begin(), parts.end(), [](const Partition& p) { return p.mount_point == "/"; });
    } else {
        parts.push_back({"/", 0, 0});  // a bare file system
    }
    for (const auto& p : parts) {
        std::string sb(68 * 1024, '\0');
        ssize_t r = pread(f.get(), sb.data(), sb.size(), static_cast<off_t>(p.offset));
        if (r < 0) throw_last_error("cannot read " + path);
        sb.resize(static_cast<size_t>(r));
        std::string type = detect_fs_type(sb);
        if (type.empty())
            throw UsageError("no file system I know (ext4, xfs, btrfs, squashfs, erofs, vfat) on the " + p.mount_point +
                             " partition of " + path);
        DissectedImage::Fs fs;
        fs.mount_point = p.mount_point;
        fs.fstype = type;
        fs.device = attach_loop(f.get(), p.offset, p.size, read_only, fs.loop);
        img.filesystems.push_back(std::move(fs));
    }
    return img;
}

}  // namespace mk::core
