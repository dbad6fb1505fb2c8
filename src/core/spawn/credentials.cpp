#include "core/spawn/credentials.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"
#include "core/kernel/mount.hpp"

namespace mk::core {
namespace {

UniqueFd connect_stream(const std::string& path) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) throw_errno(ENAMETOOLONG, path);
    std::memcpy(sa.sun_path, path.data(), path.size());
    UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) throw_last_error("socket");
    if (connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) throw_last_error("cannot connect to " + path);
    shutdown(s.get(), SHUT_WR);  // we only listen, as systemd's client
    return s;
}

}  // namespace

std::string read_credential_source(const std::string& path, size_t max) {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd && errno == ENXIO) fd = connect_stream(path);  // open() of a socket fails with ENXIO
    if (!fd) throw_last_error("cannot open " + path);
    struct stat st;
    if (fstat(fd.get(), &st) < 0) throw_last_error("stat " + path);
    if (S_ISDIR(st.st_mode)) throw_errno(EISDIR, path);
    return read_all(fd.get(), max, path);
}

void mount_credentials(int run_host_fd, const std::vector<Credential>& credentials, uid_t owner) {
    if (credentials.empty()) return;
    if (mkdirat(run_host_fd, "credentials", 0700) < 0 && errno != EEXIST)
        throw_last_error("cannot create " + std::string(kCredentialsDirectory));
    UniqueFd target(openat(run_host_fd, "credentials", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!target) throw_last_error("cannot open " + std::string(kCredentialsDirectory));
    // ramfs: credential data must never reach swap (tmpfs could swap it out).
    UniqueFd mnt =
        make_fs_mount("ramfs", {{"mode", "0700"}}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, "credentials");
    for (const auto& c : credentials) {
        UniqueFd f(openat(mnt.get(), c.id.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!f) throw_last_error("cannot create credential " + c.id);
        write_all_or_throw(f.get(), c.data, "cannot write credential " + c.id);
        if (fchmod(f.get(), 0400) < 0) throw_last_error("chmod credential " + c.id);
        if (owner != 0 && fchown(f.get(), owner, owner) < 0) throw_last_error("chown credential " + c.id);
    }
    // The mount fd is O_PATH, which fchmod() refuses: change the directory through a real open.
    UniqueFd dir(openat(mnt.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir || fchmod(dir.get(), 0500) < 0) throw_last_error("chmod " + std::string(kCredentialsDirectory));
    if (owner != 0 && fchown(dir.get(), owner, owner) < 0) throw_last_error("chown " + std::string(kCredentialsDirectory));
    set_mount_attrs(mnt.get(), MOUNT_ATTR_RDONLY, 0, false, kCredentialsDirectory);
    attach_mount(mnt.get(), target.get(), kCredentialsDirectory);
}

}  // namespace mk::core
