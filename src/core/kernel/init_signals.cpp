#include "core/kernel/init_signals.hpp"

#include <sys/stat.h>

#include <string>

#include "core/base/fs_at.hpp"

namespace mk::core {

namespace {

// The value of `key` ("\nNSpid:\t") in a status text, up to its line's end.
std::string_view status_field(std::string_view status, std::string_view key) {
    size_t at = status.find(key);
    if (at == std::string_view::npos) return {};
    std::string_view v = status.substr(at + key.size());
    return v.substr(0, v.find('\n'));
}

bool same_file(const std::string& a, const std::string& b) {
    struct stat sa, sb;
    return stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

bool process_takes_signal(std::string_view status, int sig, bool exact) {
    if (sig < 1 || sig > 64) return false;
    bool takes = false, set_up = false;
    for (std::string_view key : {"\nSigBlk:\t", "\nSigCgt:\t"}) {
        std::string_view hex = status_field(status, key);
        if (hex.empty()) continue;
        if (hex.find_first_not_of('0') != std::string_view::npos) set_up = true;
        // 16 hex digits, signal 1 is bit 0 of the last one.
        const size_t bit = static_cast<size_t>(sig - 1);
        if (hex.size() <= bit / 4) continue;
        char c = hex[hex.size() - 1 - bit / 4];
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : 0;
        if (v & (1 << (bit % 4))) takes = true;
    }
    return takes || (!exact && set_up);
}

std::optional<bool> init_takes_signal(pid_t pid, int sig, std::optional<bool> exact) {
    const std::string proc = "/proc/" + std::to_string(pid);
    auto status = read_host_file(proc + "/status", 1 << 16);
    if (!status) return true;
    std::string_view nspid = status_field(*status, "\nNSpid:\t");
    if (nspid.substr(nspid.find_last_of(" \t") + 1) != "1") return true;  // not an init
    std::string_view ppid = status_field(*status, "\nPPid:\t");
    if ((!ppid.empty() && ppid != "0" && same_file(proc + "/exe", "/proc/" + std::string(ppid) + "/exe")) ||
        same_file(proc + "/exe", "/proc/self/exe"))
        return std::nullopt;
    return process_takes_signal(*status, sig, exact.value_or(status->starts_with("Name:\tsystemd\n")));
}

}  // namespace mk::core
