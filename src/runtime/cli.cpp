#include "runtime/cli.hpp"

#include <algorithm>

#include "core/base/error.hpp"

namespace mk::runtime {
namespace {

using core::UsageError;

struct OptionDef {
    std::string_view name;
    char short_name;  // 0: none
    bool takes_value;
};

// Options each command accepts. Options runc accepts that change nothing for us are taken and
// recorded rather than refused, so engines that always pass them work (each noted why).
const std::map<std::string_view, std::vector<OptionDef>>& command_options() {
    static const std::map<std::string_view, std::vector<OptionDef>> kDefs = {
        {"create",
         {{"bundle", 'b', true},
          {"pid-file", 0, true},
          {"console-socket", 0, true},
          {"no-pivot", 0, false},
          {"no-new-keyring", 0, false},
          {"preserve-fds", 0, true}}},
        {"run",
         {{"bundle", 'b', true},
          {"pid-file", 0, true},
          {"console-socket", 0, true},
          {"no-pivot", 0, false},
          {"no-new-keyring", 0, false},
          {"preserve-fds", 0, true},
          {"detach", 'd', false},
          {"keep", 0, false}}},
        {"start", {}},
        {"state", {}},
        {"kill", {{"all", 'a', false}}},
        {"delete", {{"force", 'f', false}}},
        {"list", {{"format", 'f', true}, {"quiet", 'q', false}}},
        {"ps", {{"format", 'f', true}}},
        {"exec",
         {{"process", 'p', true},
          {"detach", 'd', false},
          {"pid-file", 0, true},
          {"tty", 't', false},
          {"console-socket", 0, true},
          {"cwd", 0, true},
          {"env", 'e', true},
          {"user", 'u', true},
          {"cap", 'c', true},
          {"no-new-privs", 0, false},
          {"preserve-fds", 0, true},
          {"process-label", 0, true},
          {"apparmor", 0, true},
          {"additional-gids", 'g', true},
          {"cgroup", 0, true}}},
        {"pause", {}},
        {"resume", {}},
        {"update",
         {{"resources", 'r', true},
          {"memory", 0, true},
          {"memory-reservation", 0, true},
          {"memory-swap", 0, true},
          {"kernel-memory", 0, true},
          {"kernel-memory-tcp", 0, true},
          {"cpu-share", 0, true},
          {"cpu-period", 0, true},
          {"cpu-quota", 0, true},
          {"cpu-burst", 0, true},
          {"cpu-rt-period", 0, true},
          {"cpu-rt-runtime", 0, true},
          {"cpuset-cpus", 0, true},
          {"cpuset-mems", 0, true},
          {"blkio-weight", 0, true},
          {"pids-limit", 0, true},
          {"l3-cache-schema", 0, true},
          {"mem-bw-schema", 0, true}}},
        {"events", {{"interval", 0, true}, {"stats", 0, false}}},
        {"features", {}},
        {"spec", {{"bundle", 'b', true}, {"rootless", 0, false}}},
        // runc's; those machrun cannot honour are taken and refused with the reason (checkpoint.cpp).
        {"checkpoint",
         {{"image-path", 0, true},
          {"work-path", 0, true},
          {"parent-path", 0, true},
          {"leave-running", 0, false},
          {"tcp-established", 0, false},
          {"ext-unix-sk", 0, false},
          {"shell-job", 0, false},
          {"lazy-pages", 0, false},
          {"status-fd", 0, true},
          {"page-server", 0, true},
          {"file-locks", 0, false},
          {"pre-dump", 0, false},
          {"manage-cgroups-mode", 0, true},
          {"empty-ns", 0, true},
          {"auto-dedup", 0, false}}},
        {"restore",
         {{"image-path", 0, true},
          {"work-path", 0, true},
          {"bundle", 'b', true},
          {"detach", 'd', false},
          {"pid-file", 0, true},
          {"console-socket", 0, true},
          {"tcp-established", 0, false},
          {"ext-unix-sk", 0, false},
          {"shell-job", 0, false},
          {"file-locks", 0, false},
          {"manage-cgroups-mode", 0, true},
          {"no-subreaper", 0, false},
          {"no-pivot", 0, false},
          {"empty-ns", 0, true},
          {"auto-dedup", 0, false},
          {"lazy-pages", 0, false},
          {"lsm-profile", 0, true},
          {"lsm-mount-context", 0, true}}},
    };
    return kDefs;
}

// Returns the definition and whether `arg` carried an inline "=value".
const OptionDef* find_option(const std::vector<OptionDef>& defs, std::string_view arg, std::string_view& name,
                             std::optional<std::string>& inline_value) {
    inline_value.reset();
    if (arg.starts_with("--")) arg.remove_prefix(2);
    else arg.remove_prefix(1);
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
        inline_value = std::string(arg.substr(eq + 1));
        arg = arg.substr(0, eq);
    }
    name = arg;
    for (const auto& d : defs)
        if (d.name == arg || (arg.size() == 1 && d.short_name == arg[0])) return &d;
    return nullptr;
}

bool is_option(std::string_view a) { return a.size() > 1 && a[0] == '-' && a != "--"; }

// The option's value: from "--name=value" or the next argument (advancing i). Go's boolean flags
// take "=true"/"=false"; false means the flag is not given at all.
bool take_value(const OptionDef& d, const std::vector<std::string>& argv, size_t& i, std::optional<std::string>& val) {
    if (d.takes_value && !val) {
        if (++i >= argv.size()) throw UsageError("option --" + std::string(d.name) + " needs a value");
        val = argv[i];
    } else if (!d.takes_value && val) {
        if (*val != "true" && *val != "false") throw UsageError("option --" + std::string(d.name) + " takes no value");
        if (*val == "false") return false;
        val = "";
    }
    return true;
}

}  // namespace

std::string Invocation::value(const std::string& name, const std::string& def) const {
    auto it = opts.find(name);
    return it == opts.end() || it->second.empty() ? def : it->second.back();
}

std::vector<std::string> Invocation::values(const std::string& name) const {
    auto it = opts.find(name);
    return it == opts.end() ? std::vector<std::string>{} : it->second;
}

const std::vector<std::string_view>& command_names() {
    static const std::vector<std::string_view> kNames = {"create", "start",    "run",  "state",      "kill",   "delete",
                                                         "list",   "ps",       "exec", "pause",      "resume", "update",
                                                         "events", "features", "spec", "checkpoint", "restore"};
    return kNames;
}

Invocation parse_command_line(const std::vector<std::string>& argv) {
    Invocation inv;
    static const std::vector<OptionDef> kGlobal = {{"root", 0, true},
                                                   {"log", 0, true},
                                                   {"log-format", 0, true},
                                                   {"systemd-cgroup", 0, false},
                                                   {"debug", 0, false},
                                                   {"version", 'v', false},
                                                   {"help", 'h', false},
                                                   // runc's; we have nothing to do with them, as runc when unset.
                                                   {"rootless", 0, true},
                                                   {"criu", 0, true}};  // checkpoint/restore's criu
    size_t i = 0;
    for (; i < argv.size() && is_option(argv[i]); i++) {
        std::string_view name;
        std::optional<std::string> val;
        const OptionDef* d = find_option(kGlobal, argv[i], name, val);
        if (!d) throw UsageError("unknown global option '" + argv[i] + "'; see machrun --help");
        if (!take_value(*d, argv, i, val)) continue;
        if (d->name == "root") {
            if (val->empty() || (*val)[0] != '/') throw UsageError("--root must be an absolute path");
            inv.global.root = *val;
        } else if (d->name == "log") {
            inv.global.log = *val;
        } else if (d->name == "log-format") {
            if (*val == "text") inv.global.log_format = LogFormat::Text;
            else if (*val == "json") inv.global.log_format = LogFormat::Json;
            else throw UsageError("--log-format must be 'text' or 'json', not '" + *val + "'");
        } else if (d->name == "systemd-cgroup") {
            inv.global.systemd_cgroup = true;
        } else if (d->name == "debug") {
            inv.global.debug = true;
        } else if (d->name == "criu") {
            inv.global.criu = *val;
        } else if (d->name == "version") {
            inv.version = true;
        } else if (d->name == "help") {
            inv.help = true;
        }
    }
    if (i >= argv.size()) {
        if (!inv.version && !inv.help) throw UsageError("no command given; see machrun --help");
        return inv;
    }
    inv.command = argv[i++];
    auto defs = command_options().find(inv.command);
    if (defs == command_options().end()) throw UsageError("unknown command '" + inv.command + "'; see machrun --help");

    bool options_done = false;
    for (; i < argv.size(); i++) {
        const std::string& a = argv[i];
        if (!options_done && a == "--") {
            options_done = true;
            continue;
        }
        // exec ID CMD ARGS...: everything after the command's name belongs to the command.
        if (options_done || !is_option(a) || (inv.command == "exec" && !inv.args.empty())) {
            inv.args.push_back(a);
            continue;
        }
        if (a == "-h" || a == "--help") {
            inv.help = true;
            continue;
        }
        std::string_view name;
        std::optional<std::string> val;
        const OptionDef* d = find_option(defs->second, a, name, val);
        if (!d)
            throw UsageError("unknown option '" + a + "' for '" + inv.command + "'; see machrun " + inv.command + " --help");
        if (!take_value(*d, argv, i, val)) continue;
        inv.opts[std::string(d->name)].push_back(val.value_or(""));
    }
    return inv;
}

}  // namespace mk::runtime
