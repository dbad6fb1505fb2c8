// What machined reads from inside an image for GetHostname/GetMachineID/GetMachineInfo/GetOSRelease
// (D-Bus) and List's acquireMetadata (Varlink): /etc/hostname, /etc/machine-id, /etc/machine-info,
// /etc/os-release (or /usr/lib/os-release), read fd-relative inside the image so that its symlinks
// cannot point outside it. One place for both front ends. Thread-compatible; errors are
// std::system_error (errno), MachineErrc::not_supported for raw and block images (reading them needs
// mounting them).
#pragma once

#include <map>
#include <optional>
#include <string>

#include "core/base/unique_fd.hpp"
#include "core/image/pool.hpp"
#include "core/machine/machine.hpp"

namespace mk::core {

// The image's top directory, O_DIRECTORY|O_NOFOLLOW.
UniqueFd open_image_root(const ImagePool& pool, const ImageInfo& info);

// The first non-comment line of /etc/hostname, trimmed; empty if none.
std::string image_hostname(int root_fd);
// /etc/machine-id if it holds a valid ID; nullopt if missing or uninitialized.
std::optional<MachineId> image_machine_id(int root_fd);
// /etc/machine-info's assignments (empty if missing).
std::map<std::string, std::string> image_machine_info(int root_fd);
// os-release's assignments; nullopt if the image has none.
std::optional<std::map<std::string, std::string>> image_os_release(int root_fd);

}  // namespace mk::core
