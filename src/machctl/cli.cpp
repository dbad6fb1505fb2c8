#include "machctl/cli.hpp"

#include <csignal>
#include <cstdlib>

#include "core/base/error.hpp"
#include "core/base/names.hpp"
#include "core/spawn/option_values.hpp"

namespace mk::machctl {
namespace {

using core::UsageError;

constexpr VerbSpec kVerbs[] = {
    {Verb::list, "list", "", 0, 0, "List running VMs and containers", Complete::none, "Machine", true},
    {Verb::status, "status", "NAME...", 1, -1, "Show VM/container details", Complete::machines, "Machine", true},
    {Verb::show, "show", "[NAME...]", 0, -1, "Show properties of one or more VMs/containers", Complete::machines, "Machine",
     true},
    {Verb::start, "start", "NAME...", 1, -1, "Start container as a service", Complete::images, "Machine"},
    {Verb::login, "login", "[NAME]", 0, 1, "Get a login prompt in a container or on the local host", Complete::machines,
     "Machine"},
    {Verb::shell, "shell", "[[USER@]NAME [COMMAND...]]", 0, -1,
     "Invoke a shell (or other command) in a container; exits with the command's status", Complete::machines, "Machine"},
    {Verb::enable, "enable", "NAME...", 1, -1, "Enable automatic container start at boot", Complete::images, "Machine"},
    {Verb::disable, "disable", "NAME...", 1, -1, "Disable automatic container start at boot", Complete::images, "Machine"},
    {Verb::poweroff, "poweroff", "NAME...", 1, -1, "Power off one or more containers (then kill after --timeout)",
     Complete::machines, "Machine"},
    {Verb::stop, "stop", "NAME...", 1, -1, "Same as poweroff", Complete::machines, "Machine"},
    {Verb::reboot, "reboot", "NAME...", 1, -1, "Reboot one or more containers", Complete::machines, "Machine"},
    {Verb::restart, "restart", "NAME...", 1, -1, "Same as reboot", Complete::machines, "Machine"},
    {Verb::terminate, "terminate", "NAME...", 1, -1, "Terminate one or more VMs/containers", Complete::machines, "Machine"},
    {Verb::kill, "kill", "NAME...", 1, -1, "Send signal to processes of a VM/container", Complete::machines, "Machine"},
    {Verb::pause, "pause", "NAME...", 1, -1, "Freeze all processes of one or more containers", Complete::machines,
     "Machine"},
    {Verb::resume, "resume", "NAME...", 1, -1, "Thaw paused containers", Complete::machines, "Machine"},
    {Verb::wait, "wait", "NAME...", 1, -1, "Wait until the machines report ready (--timeout)", Complete::images, "Machine"},
    {Verb::bind, "bind", "NAME PATH [PATH]", 2, 3, "Bind mount a path from the host into a container",
     Complete::machine_then_files, "Machine"},
    {Verb::copy_to, "copy-to", "NAME PATH [PATH]", 2, 3, "Copy files from the host to a container",
     Complete::machine_then_files, "Machine"},
    {Verb::copy_from, "copy-from", "NAME PATH [PATH]", 2, 3, "Copy files from a container to the host",
     Complete::machine_then_files, "Machine"},
    {Verb::checkpoint, "checkpoint", "NAME DIRECTORY", 2, 2, "Save a running container's processes to a directory (criu)",
     Complete::machine_then_files, "Machine"},
    {Verb::restore, "restore", "DIRECTORY [NAME]", 1, 2, "Restore a container from a checkpoint directory", Complete::files,
     "Machine"},
    {Verb::list_images, "list-images", "", 0, 0, "Show available container and VM images", Complete::none, "Image", true},
    {Verb::image_status, "image-status", "[NAME...]", 0, -1, "Show image details", Complete::images, "Image", true},
    {Verb::show_image, "show-image", "[NAME...]", 0, -1, "Show properties of image", Complete::images, "Image", true},
    {Verb::clone, "clone", "NAME NAME", 2, 2, "Clone an image", Complete::images, "Image"},
    {Verb::rename, "rename", "NAME NAME", 2, 2, "Rename an image", Complete::images, "Image"},
    {Verb::read_only, "read-only", "NAME [BOOL]", 1, 2, "Mark or unmark image read-only", Complete::images, "Image"},
    {Verb::remove, "remove", "NAME...", 1, -1, "Remove an image", Complete::images, "Image"},
    {Verb::set_limit, "set-limit", "[NAME] BYTES", 1, 2, "Set image or pool size limit (disk quota)", Complete::images,
     "Image"},
    {Verb::clean, "clean", "", 0, 0, "Remove hidden (or all) images", Complete::none, "Image"},
    {Verb::pull_tar, "pull-tar", "URL [NAME]", 1, 2, "Download a TAR container image", Complete::none, "Image Transfer"},
    {Verb::pull_raw, "pull-raw", "URL [NAME]", 1, 2, "Download a RAW container or VM image", Complete::none,
     "Image Transfer"},
    {Verb::import_tar, "import-tar", "FILE [NAME]", 1, 2, "Import a local TAR container image", Complete::files,
     "Image Transfer"},
    {Verb::import_raw, "import-raw", "FILE [NAME]", 1, 2, "Import a local RAW container or VM image", Complete::files,
     "Image Transfer"},
    {Verb::import_fs, "import-fs", "DIRECTORY [NAME]", 1, 2, "Import a local directory container image", Complete::files,
     "Image Transfer"},
    {Verb::export_tar, "export-tar", "NAME [FILE]", 1, 2, "Export a TAR container image locally", Complete::images,
     "Image Transfer"},
    {Verb::export_raw, "export-raw", "NAME [FILE]", 1, 2, "Export a RAW container or VM image locally", Complete::images,
     "Image Transfer"},
    {Verb::pull_oci, "pull-oci", "REF [NAME]", 1, 2, "Download an OCI image from a registry", Complete::none,
     "Image Transfer"},
    {Verb::import_oci, "import-oci", "DIR|ARCHIVE [NAME]", 1, 2, "Import a local OCI image layout or oci-archive",
     Complete::files, "Image Transfer"},
    {Verb::list_transfers, "list-transfers", "", 0, 0, "Show list of downloads in progress", Complete::none,
     "Image Transfer", true},
    {Verb::cancel_transfer, "cancel-transfer", "ID...", 1, -1, "Cancel a download", Complete::none, "Image Transfer"},
};

constexpr OptionSpec kOptions[] = {
    {"help", 'h', "", "Show this help", ""},
    {"version", 0, "", "Show package version", ""},
    {"no-pager", 0, "", "Do not pipe output into a pager", ""},
    {"no-legend", 0, "", "Do not show the headers and footers", ""},
    {"no-ask-password", 0, "", "Do not ask for a password (accepted, nothing asks)", ""},
    {"host", 'H', "[USER@]HOST", "Operate on remote host (ssh HOST systemd-stdio-bridge)", ""},
    {"machine", 'M', "CONTAINER", "Operate on local container", ""},
    {"user", 0, "", "Talk to your own machd (machd --user) on your session bus", ""},
    {"system", 0, "", "Talk to the system's machd (the default)", ""},
    {"property", 'p', "NAME", "Show only properties by this name", ""},
    {"value", 0, "", "When showing properties, only print the value", ""},
    {"all", 'a', "", "Show all properties, including empty ones; with list: include .host", ""},
    {"full", 'l', "", "Do not ellipsize output", ""},
    {"output", 'o', "FORMAT", "Output format: short, json, json-pretty, json-seq", "short json json-pretty json-seq"},
    {"signal", 's', "SIGNAL", "Which signal to send (kill)", ""},
    {"kill-whom", 0, "WHOM", "Whom to send signals to: leader or all", "leader all"},
    {"uid", 0, "USER", "Specify user ID to invoke shell as", ""},
    {"setenv", 'E', "VAR[=VALUE]", "Add an environment variable for shell", ""},
    {"read-only", 0, "", "Create read-only bind mount or clone", ""},
    {"mkdir", 0, "", "Create directory before bind mounting, if missing", ""},
    {"force", 0, "", "Replace target file when copying, if necessary", ""},
    {"quiet", 'q', "", "Suppress output", ""},
    {"flatten", 0, "", "pull-oci/import-oci: merge the layers into a plain directory", ""},
    {"now", 0, "", "With enable: also start; with disable: also power off", ""},
    {"timeout", 0, "SECONDS", "How long start, poweroff and stop wait (default 30s); wait: no bound unless set", ""},
    {"leave-running", 0, "", "With checkpoint: keep the container running", ""},
    {"tcp-established", 0, "", "With checkpoint: keep established TCP connections", ""},
    {"pre-dump", 0, "", "With checkpoint: an iterative pre-dump (needs CONFIG_MEM_SOFT_DIRTY)", ""},
    {"unlocked-mounts", 0, "", "With restore: accept a -U machine whose mounts come back unlocked (docs/criu.md)", ""},
    {"max-addresses", 0, "INTEGER", "Number of addresses to show per machine in list, or 'all'", ""},
    {"lines", 'n', "INTEGER", "Number of journal entries to show with status (default 10)", ""},
    {"verify", 0, "MODE", "Verification mode for downloaded images (no, checksum, signature)", "no checksum signature"},
    {"format", 0, "FORMAT", "Compress exported image (uncompressed, xz, gzip, bzip2, zstd)",
     "uncompressed xz gzip bzip2 zstd"},
};

// An option whose row lists its values accepts those only; the row also feeds --help and completion.
bool is_listed_value(const OptionSpec& spec, std::string_view arg) {
    std::string_view v = spec.values;
    while (!v.empty()) {
        size_t sp = v.find(' ');
        if (v.substr(0, sp) == arg) return true;
        if (sp == std::string_view::npos) break;
        v.remove_prefix(sp + 1);
    }
    return false;
}

std::string listed_values(const OptionSpec& spec) {
    std::string out(spec.values);
    for (size_t i = out.find(' '); i != std::string::npos; i = out.find(' ', i + 2)) out.replace(i, 1, ", ");
    return out;
}

const OptionSpec* find_long(std::string_view n) {
    for (const auto& o : kOptions)
        if (o.long_name == n) return &o;
    return nullptr;
}

const OptionSpec* find_short(char c) {
    for (const auto& o : kOptions)
        if (o.short_name == c) return &o;
    return nullptr;
}

double parse_timeout(const std::string& v) {
    std::string s = v;
    double mult = 1;
    if (s.ends_with("ms")) mult = 0.001, s.resize(s.size() - 2);
    else if (s.ends_with("min")) mult = 60, s.resize(s.size() - 3);
    else if (s.ends_with("s")) s.pop_back();
    else if (s.ends_with("m")) mult = 60, s.pop_back();
    else if (s == "infinity") return 0;
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (s.empty() || !end || *end || !(d >= 0) || d > 1e7) throw UsageError("Invalid --timeout: " + v);
    return d * mult;
}

// [USER@]HOST[:CONTAINER]: it ends up as an argument of ssh, so nothing that ssh could read as an
// option, and no whitespace or control characters.
std::string parse_bus_host(const std::string& v) {
    bool ok = !v.empty() && v[0] != '-' && v.size() <= 255;
    for (char c : v) ok = ok && static_cast<unsigned char>(c) > 0x20 && c != 0x7f;
    if (!ok) throw UsageError("Invalid --host= value '" + v + "': expected [USER@]HOST[:CONTAINER]");
    return v;
}

std::string parse_bus_machine(const std::string& v) {
    if (v != ".host" && !core::machine_name_is_valid(v))
        throw UsageError("Invalid --machine= value '" + v + "': expected a container name");
    return v;
}

void apply(Options& o, const OptionSpec& spec, const std::string& arg) {
    auto n = spec.long_name;
    if (n == "help") o.help = true;
    else if (n == "version") o.version = true;
    else if (n == "no-pager") o.no_pager = true;
    else if (n == "no-legend") o.no_legend = true;
    else if (n == "host") o.bus_target = {bus::BusTarget::Kind::Remote, parse_bus_host(arg), o.bus_target.user};
    else if (n == "machine") o.bus_target = {bus::BusTarget::Kind::Machine, parse_bus_machine(arg), o.bus_target.user};
    else if (n == "user") o.bus_target.user = true;
    else if (n == "system") o.bus_target.user = false;
    else if (n == "no-ask-password") {
    } else if (n == "property") {
        // Like systemctl: -p A,B and repeated -p both work.
        size_t pos = 0;
        while (pos <= arg.size()) {
            auto c = arg.find(',', pos);
            auto p = arg.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
            if (!p.empty()) o.properties.push_back(p);
            if (c == std::string::npos) break;
            pos = c + 1;
        }
        // -p implies showing even empty values, as machinectl.
        o.all = true;
    } else if (n == "value") o.value = true;
    else if (n == "all") o.all = true;
    else if (n == "full") {
        o.full = true;
        o.max_addresses = -1;  // as machinectl: -l implies --max-addresses=all
    } else if (n == "output") {
        if (arg != "cat" && !is_listed_value(spec, arg))  // "cat": machinectl's alias of short
            throw UsageError("Unknown output format '" + arg + "' (" + listed_values(spec) + ")");
        if (arg == "json") o.output = Output::json;
        else if (arg == "json-pretty") o.output = Output::json_pretty;
        else if (arg == "json-seq") o.output = Output::json_seq;
        else o.output = Output::short_;
    } else if (n == "signal") {
        try {
            o.signal = core::parse_signal(arg);
        } catch (const std::exception&) {
            throw UsageError("Failed to parse signal string " + arg);
        }
    } else if (n == "kill-whom") {
        if (!is_listed_value(spec, arg)) throw UsageError("Invalid --kill-whom '" + arg + "' (" + listed_values(spec) + ")");
        o.kill_whom = arg == "leader" ? KillWhom::leader : KillWhom::all;
    } else if (n == "uid") o.uid = arg;
    else if (n == "setenv") {
        auto eq = arg.find('=');
        std::string name = arg.substr(0, eq);
        if (name.empty() || name.find_first_of(" \n\t") != std::string::npos)
            throw UsageError("Environment variable assignment '" + arg + "' is not valid");
        if (eq == std::string::npos) {
            const char* v = std::getenv(name.c_str());
            if (!v) return;  // as machinectl: an unset variable is simply not passed
            o.setenv.push_back(name + "=" + v);
        } else {
            o.setenv.push_back(arg);
        }
    } else if (n == "read-only") o.read_only = true;
    else if (n == "mkdir") o.mkdir = true;
    else if (n == "force") o.force = true;
    else if (n == "quiet") o.quiet = true;
    else if (n == "flatten") o.flatten = true;
    else if (n == "now") o.now = true;
    else if (n == "leave-running") o.leave_running = true;
    else if (n == "tcp-established") o.tcp_established = true;
    else if (n == "pre-dump") o.pre_dump = true;
    else if (n == "unlocked-mounts") o.unlocked_mounts = true;
    else if (n == "timeout") o.timeout = parse_timeout(arg);
    else if (n == "verify") {
        if (!is_listed_value(spec, arg))
            throw UsageError("Failed to parse --verify= setting: " + arg + " (" + listed_values(spec) + ")");
        o.verify = arg;
    } else if (n == "format") {
        if (!is_listed_value(spec, arg)) throw UsageError("Unknown format: " + arg + " (" + listed_values(spec) + ")");
        o.format = arg;
    } else if (n == "lines") {
        char* end = nullptr;
        long v = std::strtol(arg.c_str(), &end, 10);
        if (arg.empty() || *end || v < 0 || v > 1'000'000) throw UsageError("Failed to parse lines '" + arg + "'");
        o.lines = static_cast<unsigned>(v);
    } else if (n == "max-addresses") {
        if (arg == "all") {
            o.max_addresses = -1;
            return;
        }
        char* end = nullptr;
        long v = std::strtol(arg.c_str(), &end, 10);
        if (arg.empty() || *end || v < 0 || v > 1'000'000) throw UsageError("Invalid number of addresses: " + arg);
        o.max_addresses = static_cast<int>(v);
    }
}

}  // namespace

std::span<const VerbSpec> verbs() { return kVerbs; }
std::span<const OptionSpec> options() { return kOptions; }

const VerbSpec* find_verb(std::string_view name) {
    for (const auto& v : kVerbs)
        if (v.name == name) return &v;
    return nullptr;
}

Invocation parse(std::span<const std::string> argv) {
    Invocation inv;
    std::vector<std::string> positional;
    bool options_done = false;
    auto shell_command_started = [&] {
        // `shell NAME ...`: everything after NAME goes to the command (its options included).
        return !positional.empty() && positional[0] == "shell" && positional.size() >= 2;
    };
    for (size_t i = 0; i < argv.size(); i++) {
        const std::string& a = argv[i];
        if (options_done || shell_command_started() || a.size() < 2 || a[0] != '-') {
            positional.push_back(a);
            continue;
        }
        if (a == "--") {
            options_done = true;
            continue;
        }
        if (a.starts_with("--")) {
            auto eq = a.find('=');
            std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
            const OptionSpec* spec = find_long(name);
            if (!spec) throw UsageError("unrecognized option '" + a + "'");
            std::string arg;
            if (!spec->arg.empty()) {
                if (eq != std::string::npos) arg = a.substr(eq + 1);
                else if (i + 1 < argv.size()) arg = argv[++i];
                else throw UsageError("option '" + a + "' requires an argument");
            } else if (eq != std::string::npos) {
                throw UsageError("option '--" + name + "' doesn't allow an argument");
            }
            apply(inv.opts, *spec, arg);
            continue;
        }
        for (size_t j = 1; j < a.size(); j++) {
            const OptionSpec* spec = find_short(a[j]);
            if (!spec) throw UsageError(std::string("invalid option -- '") + a[j] + "'");
            std::string arg;
            if (!spec->arg.empty()) {
                if (j + 1 < a.size()) arg = a.substr(j + 1);
                else if (i + 1 < argv.size()) arg = argv[++i];
                else throw UsageError(std::string("option requires an argument -- '") + a[j] + "'");
                apply(inv.opts, *spec, arg);
                break;
            }
            apply(inv.opts, *spec, arg);
        }
    }
    if (inv.opts.help || inv.opts.version) return inv;
    inv.verb = positional.empty() ? "list" : positional[0];
    if (!positional.empty()) positional.erase(positional.begin());
    const VerbSpec* v = find_verb(inv.verb);
    if (!v) throw UsageError("Unknown command verb '" + inv.verb + "'.");
    int n = static_cast<int>(positional.size());
    if (n < v->min_args)
        throw UsageError("Too few arguments for '" + inv.verb + "' (usage: machctl " + inv.verb + " " +
                         std::string(v->args) + ").");
    if (v->max_args >= 0 && n > v->max_args)
        throw UsageError("Too many arguments for '" + inv.verb + "' (usage: machctl " + inv.verb + " " +
                         std::string(v->args) + ").");
    inv.args = std::move(positional);
    return inv;
}

std::string help_text() {
    std::string s = "machctl [OPTIONS...] COMMAND ...\n\nSend control commands to or query the machine manager (machd).\n";
    std::string_view group;
    for (const auto& v : kVerbs) {
        if (v.group != group) {
            group = v.group;
            s += "\n" + std::string(group) + " Commands:\n";
        }
        std::string left = "  " + std::string(v.name) + (v.args.empty() ? "" : " " + std::string(v.args));
        if (left.size() < 36) left.resize(36, ' ');
        else left += "\n" + std::string(36, ' ');
        s += left + std::string(v.help) + "\n";
    }
    s += "\nOptions:\n";
    for (const auto& o : kOptions) {
        std::string left = o.short_name ? std::string("  -") + o.short_name + " --" : std::string("     --");
        left += std::string(o.long_name);
        if (!o.arg.empty()) left += "=" + std::string(o.arg);
        if (left.size() < 36) left.resize(36, ' ');
        else left += "\n" + std::string(36, ' ');
        s += left + std::string(o.help) + "\n";
    }
    s += "\nSee the machctl(1) man page for details.\n";
    return s;
}

std::string bash_completion() {
    std::string verbs_machines, verbs_images, verbs_files, verbs_none, all_verbs;
    for (const auto& v : kVerbs) {
        std::string n(v.name);
        all_verbs += (all_verbs.empty() ? "" : " ") + n;
        switch (v.complete) {
        case Complete::machines: verbs_machines += " " + n; break;
        case Complete::images: verbs_images += " " + n; break;
        case Complete::machine_then_files: verbs_files += " " + n; break;
        default: verbs_none += " " + n; break;
        }
    }
    std::string opts_arg, opts_flag, value_cases;
    for (const auto& o : kOptions) {
        std::string names = "--" + std::string(o.long_name);
        if (o.short_name) names += std::string(" -") + o.short_name;
        if (o.arg.empty()) {
            opts_flag += " " + names;
        } else {
            opts_arg += " " + names;
            if (!o.values.empty()) {
                std::string pat = "--" + std::string(o.long_name);
                if (o.short_name) pat += std::string("|-") + o.short_name;
                value_cases += "        " + pat + ") COMPREPLY=( $(compgen -W '" + std::string(o.values) +
                               "' -- \"$cur\") ); return 0 ;;\n";
            }
        }
    }
    std::string s;
    s += "# machctl(1) completion -- generated from machctl's command table, do not edit.\n";
    s += "_machctl_machines() { machctl list --no-legend --no-pager 2>/dev/null | { while read -r a b; do echo \" $a\"; "
         "done; }; }\n";
    s += "_machctl_images() { { machctl list-images --no-legend --no-pager 2>/dev/null; machctl list --no-legend --no-pager "
         "2>/dev/null; } | { while read -r a b; do echo \" $a\"; done; }; }\n";
    s += "_machctl() {\n";
    s += "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} i verb\n";
    s += "    local OPTS_ARG='" + opts_arg.substr(1) + "'\n";
    s += "    local OPTS_FLAG='" + opts_flag.substr(1) + "'\n";
    s += "    case \"$prev\" in\n" + value_cases;
    s += "        --signal|-s) COMPREPLY=( $(compgen -W \"$(kill -l | tr -s ' \\t' '\\n' | grep '^SIG')\" -- \"$cur\") ); "
         "return 0 ;;\n";
    s += "    esac\n";
    s += "    if [[ \"$cur\" = -* ]]; then COMPREPLY=( $(compgen -W \"$OPTS_ARG $OPTS_FLAG\" -- \"$cur\") ); return 0; fi\n";
    s += "    for ((i=1; i < COMP_CWORD; i++)); do\n";
    s += "        case \" $OPTS_ARG \" in *\" ${COMP_WORDS[i]} \"*) ((i++)); continue ;; esac\n";
    s += "        [[ ${COMP_WORDS[i]} = -* ]] && continue\n";
    s += "        verb=${COMP_WORDS[i]}; break\n";
    s += "    done\n";
    s += "    if [[ -z $verb ]]; then COMPREPLY=( $(compgen -W '" + all_verbs + "' -- \"$cur\") ); return 0; fi\n";
    auto alt = [](const std::string& list) {
        std::string out;
        size_t p = 0;
        while (p < list.size()) {
            while (p < list.size() && list[p] == ' ') p++;
            auto e = list.find(' ', p);
            if (p < list.size()) out += (out.empty() ? "" : "|") + list.substr(p, e - p);
            p = e == std::string::npos ? list.size() : e;
        }
        return out.empty() ? std::string("__none__") : out;
    };
    s += "    case $verb in\n";
    s += "        " + alt(verbs_machines) + ") COMPREPLY=( $(compgen -W \"$(_machctl_machines)\" -- \"$cur\") ) ;;\n";
    s += "        " + alt(verbs_images) + ") COMPREPLY=( $(compgen -W \"$(_machctl_images)\" -- \"$cur\") ) ;;\n";
    s += "        " + alt(verbs_files) + ")\n";
    s += "            if [[ ${COMP_WORDS[COMP_CWORD-1]} = \"$verb\" ]]; then COMPREPLY=( $(compgen -W "
         "\"$(_machctl_machines)\" -- \"$cur\") );\n";
    s += "            else COMPREPLY=( $(compgen -f -- \"$cur\") ); fi ;;\n";
    s += "    esac\n";
    s += "    return 0\n";
    s += "}\n";
    s += "complete -F _machctl machctl\n";
    return s;
}

}  // namespace mk::machctl
