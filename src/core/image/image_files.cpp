#include "core/image/image_files.hpp"

#include <fcntl.h>

#include <system_error>

#include "core/base/fs_at.hpp"
#include "core/machine/inspect.hpp"
#include "core/machine/machine_error.hpp"
#include "core/spawn/mount_plan.hpp"

namespace mk::core {

UniqueFd open_image_root(const ImagePool& pool, const ImageInfo& info) {
    if (info.type == ImageType::raw || info.type == ImageType::block)
        throw_machine_error(MachineErrc::not_supported,
                            "Reading files of raw or block images (which needs mounting them) is not supported by machd");
    std::string entry = info.path.substr(info.path.rfind('/') + 1);
    if (info.type == ImageType::mstack) {
        // The merged view, read-only: a detached overlay of rw/ over the layers, which no path of
        // the host shows and which goes with the returned fd.
        return make_mstack_mount(read_mstack_root(pool.path() + "/" + entry, true), MstackUpper::None, -1);
    }
    UniqueFd root(::openat(pool.fd(), entry.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!root) throw std::system_error(errno, std::generic_category(), "cannot open image " + info.name);
    return root;
}

std::string image_hostname(int root_fd) {
    auto text = read_file_in_root(root_fd, "/etc/hostname");
    if (!text) return {};
    // First non-comment line, trimmed (systemd's read_etc_hostname()).
    size_t pos = 0;
    while (pos < text->size()) {
        size_t end = text->find('\n', pos);
        if (end == std::string::npos) end = text->size();
        std::string line = text->substr(pos, end - pos);
        pos = end + 1;
        auto b = line.find_first_not_of(" \t\r");
        if (b == std::string::npos || line[b] == '#') continue;
        auto e = line.find_last_not_of(" \t\r");
        return line.substr(b, e - b + 1);
    }
    return {};
}

std::optional<MachineId> image_machine_id(int root_fd) {
    auto text = read_file_in_root(root_fd, "/etc/machine-id");
    if (!text) return std::nullopt;
    return id128_from_machine_id_file(*text);
}

std::map<std::string, std::string> image_machine_info(int root_fd) {
    auto text = read_file_in_root(root_fd, "/etc/machine-info");
    return text ? parse_os_release(*text) : std::map<std::string, std::string>{};
}

std::optional<std::map<std::string, std::string>> image_os_release(int root_fd) {
    for (const char* path : {"/etc/os-release", "/usr/lib/os-release"})
        if (auto text = read_file_in_root(root_fd, path)) return parse_os_release(*text);
    return std::nullopt;
}

}  // namespace mk::core
