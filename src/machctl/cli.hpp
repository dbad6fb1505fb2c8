// machctl's command table: verbs, options, their help and completion, and the parser driven by it.
// One table feeds parse(), --help and the generated bash completion (machctl-completion-gen), so
// the three cannot drift apart. Pure: no bus, no I/O beyond the strings returned.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus/bus_target.hpp"

namespace mk::machctl {

// What a verb's positional arguments complete to.
enum class Complete { none, machines, images, files, signals, machine_then_files };

enum class Verb {
    list,
    status,
    show,
    start,
    login,
    shell,
    enable,
    disable,
    poweroff,
    stop,
    reboot,
    restart,
    terminate,
    kill,
    pause,
    resume,
    checkpoint,
    restore,
    wait,
    bind,
    copy_to,
    copy_from,
    list_images,
    image_status,
    show_image,
    clone,
    rename,
    read_only,
    remove,
    set_limit,
    clean,
    pull_tar,
    pull_raw,
    import_tar,
    import_raw,
    import_fs,
    pull_oci,
    import_oci,
    export_tar,
    export_raw,
    list_transfers,
    cancel_transfer
};

struct VerbSpec {
    Verb id;  // what main.cpp dispatches on
    std::string_view name;
    std::string_view args;  // for --help: "NAME..."
    int min_args;
    int max_args;  // -1 = unbounded
    std::string_view help;
    Complete complete;
    std::string_view group;  // "Machine", "Image"
    bool paged = false;      // output goes through the pager, as machinectl's
};

struct OptionSpec {
    std::string_view long_name;
    char short_name;       // 0 = none
    std::string_view arg;  // "" = flag, else the argument's name for --help
    std::string_view help;
    std::string_view values;  // the argument's valid values ("" = any): checked by parse(), completed
};

std::span<const VerbSpec> verbs();
std::span<const OptionSpec> options();
const VerbSpec* find_verb(std::string_view name);

enum class Output { short_, json, json_pretty, json_seq };
enum class KillWhom { unset, leader, all };

struct Options {
    bool all = false, value = false, full = false, no_pager = false, no_legend = false, quiet = false;
    bool flatten = false;
    bool read_only = false, mkdir = false, force = false, help = false, version = false, now = false;
    bool leave_running = false, tcp_established = false, pre_dump = false;  // checkpoint
    bool unlocked_mounts = false;                                           // restore
    std::vector<std::string> properties;
    Output output = Output::short_;
    std::optional<int> signal;
    KillWhom kill_whom = KillWhom::unset;
    std::string uid;
    std::string verify = "signature";  // pull-*: no, checksum, signature
    std::string format;                // export-*: empty = from the file name
    std::vector<std::string> setenv;   // NAME=VALUE (NAME alone takes machctl's own value)
    std::optional<double> timeout;     // seconds
    int max_addresses = 1;             // -1 = all
    bus::BusTarget bus_target;         // -H/-M: the last one given wins, as machinectl
    unsigned lines = 10;               // status: journal entries shown (-n), as machinectl
};

struct Invocation {
    Options opts;
    std::string verb;               // "list" when none given
    std::vector<std::string> args;  // positionals after the verb
};

// Parses argv (without argv[0]). Options may appear anywhere, except that for `shell` everything
// after [USER@]NAME belongs to the command (as machinectl). Throws UsageError (core/base/error.hpp).
Invocation parse(std::span<const std::string> argv);

std::string help_text();
std::string bash_completion();

}  // namespace mk::machctl
