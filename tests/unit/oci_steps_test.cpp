// The OCI-only steps, run in a forked child in fresh namespaces and read back from the kernel.
#include "core/spawn/oci_steps.hpp"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <sstream>

#include "core/base/unique_fd.hpp"

using namespace mk::core;

namespace {

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
}

int in_child(const std::function<int()>& body) {
    pid_t pid = fork();
    if (pid == 0) {
        int r = 99;
        try {
            r = body();
        } catch (...) {
            r = 98;
        }
        _exit(r);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST(OciSteps, SysctlsAndDomainnameLandInTheContainersNamespacesOnly) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for new namespaces";
    const std::string host_msgmax = read_file("/proc/sys/kernel/msgmax");
    const std::string host_forward = read_file("/proc/sys/net/ipv4/ip_forward");
    OciSpec o;
    o.sysctl = {{"kernel.msgmax", "12345"}, {"net.ipv4.ip_forward", host_forward == "1" ? "0" : "1"}};
    o.domainname = "oci.example";
    EXPECT_EQ(in_child([&] {
                  if (unshare(CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWUTS) < 0) return 1;
                  apply_oci_sysctls(o);
                  apply_oci_domainname(o);
                  if (read_file("/proc/sys/kernel/msgmax") != "12345") return 2;
                  if (read_file("/proc/sys/net/ipv4/ip_forward") != o.sysctl.at("net.ipv4.ip_forward")) return 3;
                  utsname u{};
                  uname(&u);
                  if (std::string(u.domainname) != "oci.example") return 4;
                  return 0;
              }),
              0);
    EXPECT_EQ(read_file("/proc/sys/kernel/msgmax"), host_msgmax);
    EXPECT_EQ(read_file("/proc/sys/net/ipv4/ip_forward"), host_forward);
    OciSpec bad;
    bad.sysctl = {{"kernel.no_such_sysctl", "1"}};
    EXPECT_EQ(in_child([&] {
                  try {
                      apply_oci_sysctls(bad);
                  } catch (const std::system_error& e) {
                      return std::string(e.what()).find("kernel.no_such_sysctl") != std::string::npos ? 0 : 2;
                  }
                  return 1;
              }),
              0);
}

TEST(OciSteps, UmaskIoPriorityAndScheduler) {
    OciSpec o;
    o.umask = 027;
    o.io_priority = OciSpec::IoPriority{3, 0};  // IDLE
    o.scheduler = OciSpec::Scheduler{SCHED_BATCH, 7, 0, 0, 0, 0, 0};
    EXPECT_EQ(in_child([&] {
                  apply_oci_process_attributes(o);
                  mode_t old = umask(0);
                  if (old != 027) return 1;
                  long prio = syscall(SYS_ioprio_get, 1, 0);
                  if (prio < 0 || (prio >> 13) != 3) return 2;
                  if (sched_getscheduler(0) != SCHED_BATCH) return 3;
                  if (getpriority(PRIO_PROCESS, 0) != 7) return 4;
                  return 0;
              }),
              0);
}

TEST(OciSteps, ReadonlyPathsAndDevicesInsideTheTree) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for mounts and mknod";
    char tmpl[] = "/tmp/mk-oci-steps-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string root = tmpl;
    EXPECT_EQ(
        in_child([&] {
            if (unshare(CLONE_NEWNS) < 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) return 1;
            if (mount("tmpfs", root.c_str(), "tmpfs", 0, "mode=0755") < 0) return 2;
            if (mkdir((root + "/ro").c_str(), 0755) < 0 || mkdir((root + "/rw").c_str(), 0755) < 0) return 3;
            // A symlink in the image pointing outside: resolved inside the root, so it names root/rw.
            if (symlink("/rw", (root + "/link").c_str()) < 0) return 4;
            UniqueFd rfd(open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            OciSpec o;
            o.readonly_paths = {"/ro", "/missing", "/link"};
            o.devices = {OciDevice{"/dev/sub/null", 'c', 1, 3, 0620, 1, 2}, OciDevice{"/dev/fifo", 'p', 0, 0, {}, {}, {}}};
            umask(022);
            apply_oci_readonly_paths(o, rfd.get());
            if (mknod((root + "/ro/x").c_str(), S_IFREG | 0644, 0) == 0 || errno != EROFS) return 5;
            if (mknod((root + "/rw/x").c_str(), S_IFREG | 0644, 0) == 0 || errno != EROFS) return 6;  // via /link
            apply_oci_devices(o, rfd.get());
            struct stat st {};
            if (stat((root + "/dev/sub/null").c_str(), &st) < 0) return 7;
            if (!S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3) || (st.st_mode & 07777) != 0620 || st.st_uid != 1 ||
                st.st_gid != 2)
                return 8;
            if (stat((root + "/dev/fifo").c_str(), &st) < 0 || !S_ISFIFO(st.st_mode) || (st.st_mode & 07777) != 0666)
                return 9;
            apply_oci_devices(o, rfd.get());  // again: replaces
            return 0;
        }),
        0);
    rmdir(root.c_str());
}
