// seccomp_programs_for(): precompiled table, then the on-disk cache, then libseccomp.
//
// Cache file format (host byte order; the cache never leaves the machine):
//   "MKSCBPF1" | u32 key_len | key | u32 nprog | nprog x (u32 ninsns | ninsns x sock_filter) | u64 fnv1a
// The key is stored in full so a hash collision in the file name cannot hand out the wrong filter,
// and the trailing checksum catches torn writes. Anything that does not validate is ignored.
#include <fcntl.h>
#include <seccomp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/base/unique_fd.hpp"
#include "core/base/io.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/kernel/seccomp_precompiled.hpp"
#include "core/kernel/syscall_groups.hpp"

namespace mk::core {

namespace {

constexpr char kMagic[8] = {'M', 'K', 'S', 'C', 'B', 'P', 'F', '1'};
constexpr size_t kMaxCacheFile = 1 << 20;

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 14695981039346656037ull) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

// Everything besides the policy that decides the compiled program: our group table, machkit's
// version and the libseccomp that compiles it.
const std::string& compiler_fingerprint() {
    static const std::string fp = [] {
        uint64_t h = fnv1a(MK_VERSION, sizeof MK_VERSION);
        for (const auto& g : syscall_groups()) {
            h = fnv1a(g.name.data(), g.name.size(), h);
            for (auto n : g.items) h = fnv1a(n.data(), n.size(), fnv1a("\n", 1, h));
        }
        const scmp_version* v = seccomp_version();
        char buf[96];
        snprintf(buf, sizeof buf, "libseccomp-%u.%u.%u tables-%016llx", v->major, v->minor, v->micro,
                 static_cast<unsigned long long>(h));
        return std::string(buf);
    }();
    return fp;
}

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }

std::string serialize(const std::string& key, const std::vector<BpfProgram>& progs) {
    std::string out(kMagic, sizeof kMagic);
    put_u32(out, uint32_t(key.size()));
    out += key;
    put_u32(out, uint32_t(progs.size()));
    for (const auto& p : progs) {
        put_u32(out, uint32_t(p.insns.size()));
        out.append(reinterpret_cast<const char*>(p.insns.data()), p.insns.size() * sizeof(sock_filter));
    }
    uint64_t sum = fnv1a(out.data(), out.size());
    out.append(reinterpret_cast<const char*>(&sum), sizeof sum);
    return out;
}

std::optional<std::vector<BpfProgram>> deserialize(std::string_view data, const std::string& key) {
    if (data.size() < sizeof kMagic + 8 + 8) return std::nullopt;
    uint64_t sum;
    memcpy(&sum, data.data() + data.size() - sizeof sum, sizeof sum);
    data.remove_suffix(sizeof sum);
    if (fnv1a(data.data(), data.size()) != sum) return std::nullopt;
    if (memcmp(data.data(), kMagic, sizeof kMagic) != 0) return std::nullopt;
    data.remove_prefix(sizeof kMagic);
    auto get_u32 = [&](uint32_t& v) {
        if (data.size() < sizeof v) return false;
        memcpy(&v, data.data(), sizeof v);
        data.remove_prefix(sizeof v);
        return true;
    };
    uint32_t klen, nprog;
    if (!get_u32(klen) || data.size() < klen || data.substr(0, klen) != key) return std::nullopt;
    data.remove_prefix(klen);
    if (!get_u32(nprog) || nprog == 0 || nprog > 64) return std::nullopt;
    std::vector<BpfProgram> progs(nprog);
    for (auto& p : progs) {
        uint32_t n;
        if (!get_u32(n) || n == 0 || n > BPF_MAXINSNS || data.size() < n * sizeof(sock_filter)) return std::nullopt;
        p.insns.resize(n);
        memcpy(p.insns.data(), data.data(), n * sizeof(sock_filter));
        data.remove_prefix(n * sizeof(sock_filter));
    }
    if (!data.empty()) return std::nullopt;
    return progs;
}

std::optional<std::string> read_small_file(const std::string& path) {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY));
    if (!fd) return std::nullopt;
    struct stat st {};
    if (fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > off_t(kMaxCacheFile)) return std::nullopt;
    std::string buf(size_t(st.st_size), '\0');
    size_t done = 0;
    while (done < buf.size()) {
        ssize_t n = retry_eintr([&] { return read(fd.get(), buf.data() + done, buf.size() - done); });
        if (n <= 0) return std::nullopt;
        done += size_t(n);
    }
    return buf;
}

bool mkdir_parents(const std::string& dir) {
    for (size_t i = 1; i <= dir.size(); i++) {
        if (i < dir.size() && dir[i] != '/') continue;
        std::string part = dir.substr(0, i);
        if (mkdir(part.c_str(), 0755) < 0 && errno != EEXIST) return false;
    }
    return true;
}

// Best effort: temp file + rename, so readers see the old file or the whole new one.
void write_cache_file(const std::string& dir, const std::string& path, const std::string& data) {
    if (!mkdir_parents(dir)) return;
    std::string tmp = path + ".XXXXXX";
    UniqueFd fd(mkostemp(tmp.data(), O_CLOEXEC));
    if (!fd) return;
    bool ok = fchmod(fd.get(), 0644) == 0 && write_all(fd.get(), data) == 0;
    fd.reset();
    if (!ok || rename(tmp.c_str(), path.c_str()) < 0) unlink(tmp.c_str());
}

}  // namespace

std::optional<std::vector<BpfProgram>> seccomp_precompiled(const SeccompPolicy& policy) {
    const std::string key = seccomp_policy_key(policy);
    for (size_t i = 0; i < detail::kPrecompiledSeccompCount; i++) {
        const auto& pre = detail::kPrecompiledSeccomp[i];
        if (key != pre.key) continue;
        std::vector<BpfProgram> progs(pre.count);
        for (size_t j = 0; j < pre.count; j++)
            progs[j].insns.assign(pre.programs[j].insns, pre.programs[j].insns + pre.programs[j].len);
        return progs;
    }
    return std::nullopt;
}

std::vector<BpfProgram> seccomp_programs_for(const SeccompPolicy& policy, const std::string& cache_dir) {
    if (auto pre = seccomp_precompiled(policy)) return std::move(*pre);
    if (cache_dir.empty()) return seccomp_compile(policy);
    return seccomp_cached(seccomp_policy_key(policy), cache_dir, [&] { return seccomp_compile(policy); });
}

std::vector<BpfProgram> seccomp_cached(const std::string& policy_key, const std::string& cache_dir,
                                       const std::function<std::vector<BpfProgram>()>& compile) {
    const std::string key = policy_key + " " + compiler_fingerprint();
    char name[32];
    snprintf(name, sizeof name, "/%016llx.bpf", static_cast<unsigned long long>(fnv1a(key.data(), key.size())));
    const std::string path = cache_dir + name;
    if (auto data = read_small_file(path))
        if (auto progs = deserialize(*data, key)) return std::move(*progs);

    std::vector<BpfProgram> progs = compile();
    write_cache_file(cache_dir, path, serialize(key, progs));
    return progs;
}

}  // namespace mk::core
