// machctl's verbs: one function per verb, grouped by file (verbs_machine, verbs_shell, verbs_unit,
// verbs_image), and what they share (Context, error phrasing, property helpers). Each verb takes
// the positional arguments after its name and returns the exit status; errors are thrown as
// Failure (already phrased), UsageError or bus::ClientError (phrased once in main()).
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "bus/machine_client.hpp"
#include "bus/names.hpp"
#include "machctl/cli.hpp"
#include "machctl/output.hpp"

namespace mk::machctl {

using bus::ClientError;
using bus::MachineClient;
using Args = std::vector<std::string>;

using bus::kImageInterface;
using bus::kMachineInterface;
using bus::kManagerInterface;
using bus::kManagerPath;
inline constexpr double kDefaultStopTimeout = 30;

// An error already phrased for the user ("Could not kill machine: No machine 'x' known").
struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Context {
    Options opts;
    bool tty = false;     // stdout was a terminal when machctl started (the pager may hold it now)
    bool colors = false;  // tty, and neither NO_COLOR nor SYSTEMD_COLORS=0 nor TERM=dumb
    // A table: libsmartcols fitted to the terminal on a tty, machinectl 252's bytes otherwise.
    void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                     const TableStyle& style = {}, size_t ellipsize = 0) const;
    std::unique_ptr<MachineClient> client_;
    MachineClient& client() {
        if (!client_) client_ = std::make_unique<MachineClient>(opts.bus_target);
        return *client_;
    }
    bool is_json() const { return opts.output != Output::short_; }
    void emit_json(const json& j) const { std::fputs(format_json(j, opts.output).c_str(), stdout); }
    // A table's rows (list, list-images): one json-seq record, as machinectl.
    void emit_table_json(const json& j) const { std::fputs(format_json(j, opts.output, true).c_str(), stdout); }
};

// The daemon's error as one line (policy rejections and missing extension methods rephrased).
std::string describe_remote(const ClientError& e);

// Runs a bus call; turns the daemon's error into "<what>: <message>". Connection problems pass
// through (main() phrases them once).
template <typename F>
auto bus_call(const std::string& what, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const ClientError& e) {
        if (e.kind != ClientError::Kind::remote) throw;
        throw Failure(what + ": " + describe_remote(e));
    }
}

bool is_no_such(const ClientError& e);
std::string get(const std::map<std::string, std::string>& m, const std::string& k);
const bus::Property* find_prop(const std::vector<bus::Property>& props, const std::string& name);
template <typename T>
T prop_or(const std::vector<bus::Property>& props, const std::string& name, T dflt) {
    if (auto* p = find_prop(props, name))
        if (auto* v = std::get_if<T>(&p->value)) return *v;
    return dflt;
}
json props_json(const std::vector<bus::Property>& props);
uint64_t now_usec();
bool machine_gone(Context& c, const std::string& name);
bool wait_gone(Context& c, const std::string& name, double seconds);
// show / show-image: properties of the manager (no names) or of each named object.
int show_objects(Context& c, const Args& names, bool images);

// verbs_machine.cpp
int verb_list(Context& c, const Args& a);
int verb_status(Context& c, const Args& a);
int verb_show(Context& c, const Args& a);
int verb_terminate(Context& c, const Args& a);
int verb_kill(Context& c, const Args& a);
int verb_poweroff(Context& c, const Args& a);
int verb_reboot(Context& c, const Args& a);
int verb_pause(Context& c, const Args& a);
int verb_checkpoint(Context& c, const Args& a);  // verbs_checkpoint.cpp
int verb_restore(Context& c, const Args& a);
int verb_resume(Context& c, const Args& a);
int verb_wait(Context& c, const Args& a);
int verb_bind(Context& c, const Args& a);
int verb_copy(Context& c, const Args& a, bool to_machine);
// verbs_shell.cpp
int verb_shell(Context& c, const Args& a);
int verb_login(Context& c, const Args& a);
// verbs_unit.cpp
int verb_start(Context& c, const Args& a);
int verb_enable(Context& c, const Args& a, bool enable);
// verbs_image.cpp
int verb_list_images(Context& c, const Args& a);
int verb_image_status(Context& c, const Args& a);
int verb_show_image(Context& c, const Args& a);
int verb_clone(Context& c, const Args& a);
int verb_rename(Context& c, const Args& a);
int verb_read_only(Context& c, const Args& a);
int verb_remove(Context& c, const Args& a);
int verb_set_limit(Context& c, const Args& a);
int verb_clean(Context& c, const Args& a);

// verbs_transfer.cpp (org.freedesktop.import1)
int verb_pull(Context& c, const Args& a, bool raw);
int verb_import(Context& c, const Args& a, const char* kind);  // "tar", "raw", "fs"
int verb_pull_oci(Context& c, const Args& a);
int verb_import_oci(Context& c, const Args& a);
int verb_export(Context& c, const Args& a, bool raw);
int verb_list_transfers(Context& c, const Args& a);
int verb_cancel_transfer(Context& c, const Args& a);

}  // namespace mk::machctl
