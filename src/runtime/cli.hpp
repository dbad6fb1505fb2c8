// machrun's command line: runc's, as containerd's go-runc and podman's conmon pass it.
// Global options come before the command; each command has its own. Long options take one or two
// dashes and "--name value" or "--name=value" (Go's flag package, which runc's CLI library uses,
// accepts all four), so whatever spelling an engine uses reaches us.
//
// Pure: parses strings, no I/O. Throws UsageError with a one-line reason. Thread-safe.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mk::runtime {

enum class LogFormat { Text, Json };

struct GlobalOptions {
    std::string root = "/run/machrun";
    std::string log;  // "" = stderr only
    LogFormat log_format = LogFormat::Text;
    bool systemd_cgroup = false;
    bool debug = false;
    std::string criu;  // --criu: the criu command line (checkpoint/restore); "" = $MK_CRIU or criu
};

struct Invocation {
    GlobalOptions global;
    bool version = false;
    bool help = false;
    std::string command;                                   // "" with --version / --help
    std::map<std::string, std::vector<std::string>> opts;  // canonical long name -> values ("" for flags)
    std::vector<std::string> args;                         // positionals (exec: the id, then the command's argv)

    bool flag(const std::string& name) const { return opts.contains(name); }
    // The last value given for `name`, or `def`.
    std::string value(const std::string& name, const std::string& def = {}) const;
    std::vector<std::string> values(const std::string& name) const;
};

// The commands we know, in the order `--help` lists them.
const std::vector<std::string_view>& command_names();

Invocation parse_command_line(const std::vector<std::string>& argv);  // argv[0] excluded

}  // namespace mk::runtime
