// Credentials for the container (nspawn's --set-credential=/--load-credential=): read on the host
// when the command line is parsed, written into the container as /run/host/credentials/ID on a
// ramfs (never swapped to disk), which the payload finds through $CREDENTIALS_DIRECTORY.
//
// Side effects: read_credential_source() reads a host file or talks to a host socket;
// mount_credentials() mounts inside the calling process's mount namespace. Not thread-safe.
#pragma once

#include <string>
#include <vector>

#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

inline constexpr const char* kCredentialsDirectory = "/run/host/credentials";

// The whole content of `path`, at most `max` bytes (EFBIG beyond). As systemd's
// READ_FULL_FILE_CONNECT_SOCKET: when `path` is an AF_UNIX stream socket, it is connected to and
// read until EOF, so a credential can come from a service that hands it out. Throws std::system_error.
std::string read_credential_source(const std::string& path, size_t max);

// Mounts a ramfs at `run_host_fd`/credentials (run_host_fd: the container's /run/host) holding one
// file per credential, mode 0400, owned by `owner` (the container's root); the directory is 0500
// and the mount read-only, nosuid, nodev, noexec, as nspawn 252's setup_credentials(). Nothing is
// mounted for an empty list.
void mount_credentials(int run_host_fd, const std::vector<Credential>& credentials, uid_t owner);

}  // namespace mk::core
