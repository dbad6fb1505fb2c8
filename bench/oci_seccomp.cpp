// The one seccomp filter compiled at container start: an OCI profile (linux.seccomp). Measures
// config.json parsing of the profile + libseccomp compilation on podman's default profile
// (/usr/share/containers/seccomp.json, converted to the OCI form for x86-64 with podman's default
// capabilities, as podman does before handing it to the runtime), and the load into the kernel.
// Printed next to the compile of spawn's own default filter (normally precompiled at build time,
// so not paid at start) for scale. runc and crun cannot be measured separately from their start.
//
//   build/bench/oci-seccomp-bench [PROFILE] [ITERATIONS]
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/kernel/capabilities.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/kernel/seccomp_oci.hpp"
#include "core/spawn/oci_config.hpp"

using namespace mk::core;
using json = nlohmann::json;

namespace {

const char* kPodmanCaps[] = {"CAP_CHOWN",   "CAP_DAC_OVERRIDE",     "CAP_FOWNER",    "CAP_FSETID",
                             "CAP_KILL",    "CAP_NET_BIND_SERVICE", "CAP_SETFCAP",   "CAP_SETGID",
                             "CAP_SETPCAP", "CAP_SETUID",           "CAP_SYS_CHROOT"};

bool has_cap(const std::string& c) { return std::ranges::find(kPodmanCaps, c) != std::end(kPodmanCaps); }

// containers/common's seccomp.json -> runtime-spec linux.seccomp, for amd64.
json to_oci(const json& d) {
    json out = {{"defaultAction", d["defaultAction"]},
                {"architectures", {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}},
                {"syscalls", json::array()}};
    if (d.contains("defaultErrnoRet")) out["defaultErrnoRet"] = d["defaultErrnoRet"];
    for (const auto& s : d["syscalls"]) {
        auto in = s.value("includes", json::object()), ex = s.value("excludes", json::object());
        bool ok = true;
        for (const auto& c : in.value("caps", json::array())) ok &= has_cap(c.get<std::string>());
        for (const auto& c : ex.value("caps", json::array())) ok &= !has_cap(c.get<std::string>());
        if (in.contains("arches") && !std::ranges::count(in["arches"], json("amd64"))) ok = false;
        if (ex.contains("arches") && std::ranges::count(ex["arches"], json("amd64"))) ok = false;
        if (!ok) continue;
        json r = {{"names", s["names"]}, {"action", s["action"]}};
        if (s.contains("errnoRet")) r["errnoRet"] = s["errnoRet"];
        if (s.contains("args") && !s["args"].is_null()) r["args"] = s["args"];
        out["syscalls"].push_back(r);
    }
    return out;
}

template <typename F>
double median_ms(int n, F&& f) {
    std::vector<double> t;
    for (int i = 0; i < n; i++) {
        auto a = std::chrono::steady_clock::now();
        f();
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    const char* path = argc > 1 ? argv[1] : "/usr/share/containers/seccomp.json";
    int n = argc > 2 ? std::max(1, atoi(argv[2])) : 21;
    std::ifstream in(path);
    if (!in) {
        fprintf(stderr, "oci-seccomp-bench: cannot read %s\n", path);
        return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    json cfg = {
        {"ociVersion", "1.0.2-dev"},
        {"root", {{"path", "rootfs"}}},
        {"process", {{"args", {"/bin/true"}}, {"cwd", "/"}}},
        {"linux", {{"namespaces", {{{"type", "pid"}}, {{"type", "mount"}}}}, {"seccomp", to_oci(json::parse(ss.str()))}}}};
    const std::string text = cfg.dump();
    OciSeccompFilter filter;
    double parse = median_ms(n, [&] { (void)parse_oci_config(text, "/b"); });
    SpawnSpec spec = parse_oci_config(text, "/b");
    double compile = median_ms(n, [&] { filter = seccomp_oci_compile(*spec.oci.seccomp); });
    char dir[] = "/tmp/mk-oci-seccomp-bench-XXXXXX";
    if (!mkdtemp(dir)) return 2;
    (void)seccomp_oci_programs_for(*spec.oci.seccomp, dir);  // fills the cache
    double cached = median_ms(n, [&] { filter = seccomp_oci_programs_for(*spec.oci.seccomp, dir); });
    std::filesystem::remove_all(dir);
    // Loading, in a child each time (a filter cannot be removed).
    double load = median_ms(n, [&] {
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            _exit(seccomp_oci_install(filter) == 0 ? 0 : 1);
        }
        int st = 0;
        waitpid(pid, &st, 0);
    });
    double fork_only = median_ms(n, [&] {
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        int st = 0;
        waitpid(pid, &st, 0);
    });
    SeccompPolicy own;
    own.retained_caps = kDefaultCapabilities;
    double own_compile = median_ms(n, [&] { (void)seccomp_compile(own); });

    printf("OCI seccomp, podman's default profile (%zu rules, %zu BPF instructions), median of %d:\n",
           spec.oci.seccomp->syscalls.size(), filter.program.insns.size(), n);
    printf("  config.json parse (whole config)  %8.3f ms\n", parse);
    printf("  libseccomp compile (ours, OCI)    %8.3f ms\n", compile);
    printf("  from the on-disk cache (hit)      %8.3f ms (ratio compile / cached: %.0fx)\n", cached, compile / cached);
    printf("  load into the kernel              %8.3f ms (fork+load %.3f - fork %.3f)\n", std::max(0.0, load - fork_only),
           load, fork_only);
    printf("  spawn's default filter, compiled  %8.3f ms (precompiled at build time: not paid at start)\n", own_compile);
    printf("  ratio OCI compile / spawn default compile: %.2f\n", compile / own_compile);
    return 0;
}
