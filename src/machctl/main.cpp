// machctl: the command line for machines, machinectl 252's verbs, options and output against
// machd (or systemd-machined) on the system bus. See docs/machctl.md and docs/man/machctl.1.
#include <cstdio>
#include <functional>
#include <map>

#include <unistd.h>

#include <clocale>
#include <cstdlib>
#include <cstring>
#include <set>

#include "core/base/error.hpp"
#include "machctl/pager.hpp"
#include "machctl/verbs.hpp"

namespace mk::machctl {
namespace {

using Handler = std::function<int(Context&, const std::vector<std::string>&)>;

const std::map<std::string, Handler>& handlers() {
    static const std::map<std::string, Handler> h = {
        {"list", verb_list},
        {"status", verb_status},
        {"show", verb_show},
        {"start", verb_start},
        {"login", verb_login},
        {"shell", verb_shell},
        {"enable", [](Context& c, const std::vector<std::string>& a) { return verb_enable(c, a, true); }},
        {"disable", [](Context& c, const std::vector<std::string>& a) { return verb_enable(c, a, false); }},
        {"poweroff", verb_poweroff},
        {"stop", verb_poweroff},
        {"reboot", verb_reboot},
        {"restart", verb_reboot},
        {"terminate", verb_terminate},
        {"kill", verb_kill},
        {"pause", verb_pause},
        {"checkpoint", verb_checkpoint},
        {"restore", verb_restore},
        {"resume", verb_resume},
        {"wait", verb_wait},
        {"bind", verb_bind},
        {"copy-to", [](Context& c, const std::vector<std::string>& a) { return verb_copy(c, a, true); }},
        {"copy-from", [](Context& c, const std::vector<std::string>& a) { return verb_copy(c, a, false); }},
        {"list-images", verb_list_images},
        {"image-status", verb_image_status},
        {"show-image", verb_show_image},
        {"clone", verb_clone},
        {"rename", verb_rename},
        {"read-only", verb_read_only},
        {"remove", verb_remove},
        {"set-limit", verb_set_limit},
        {"clean", verb_clean},
        {"pull-tar", [](Context& c, const std::vector<std::string>& a) { return verb_pull(c, a, false); }},
        {"pull-raw", [](Context& c, const std::vector<std::string>& a) { return verb_pull(c, a, true); }},
        {"import-tar", [](Context& c, const std::vector<std::string>& a) { return verb_import(c, a, "tar"); }},
        {"import-raw", [](Context& c, const std::vector<std::string>& a) { return verb_import(c, a, "raw"); }},
        {"import-fs", [](Context& c, const std::vector<std::string>& a) { return verb_import(c, a, "fs"); }},
        {"pull-oci", verb_pull_oci},
        {"import-oci", verb_import_oci},
        {"export-tar", [](Context& c, const std::vector<std::string>& a) { return verb_export(c, a, false); }},
        {"export-raw", [](Context& c, const std::vector<std::string>& a) { return verb_export(c, a, true); }},
        {"list-transfers", verb_list_transfers},
        {"cancel-transfer", verb_cancel_transfer},
    };
    return h;
}

}  // namespace
}  // namespace mk::machctl

namespace {

// systemd's colors_enabled(): a terminal, unless NO_COLOR, SYSTEMD_COLORS=0/false/no or TERM=dumb.
bool colors_wanted(bool tty) {
    if (std::getenv("NO_COLOR")) return false;
    if (const char* c = std::getenv("SYSTEMD_COLORS")) {
        std::string v = c;
        if (v == "0" || v == "false" || v == "no" || v == "off") return false;
        if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
    }
    const char* term = std::getenv("TERM");
    return tty && !(term && std::strcmp(term, "dumb") == 0);
}

// The verbs machinectl pages (their output can be longer than a screen).
bool pages(const std::string& verb) {
    static const std::set<std::string> v = {"list", "status", "show", "list-images", "image-status", "show-image",
                                            "list-transfers"};
    return v.contains(verb);
}

int run(int argc, char** argv);

}  // namespace

int main(int argc, char** argv) {
    std::setlocale(LC_ALL, "");  // libsmartcols measures and prints UTF-8 only in a UTF-8 locale
    int rc = run(argc, argv);
    mk::machctl::pager_close();  // after every message: stderr may go to the pager as well
    return rc;
}

namespace {

int run(int argc, char** argv) {
    using namespace mk::machctl;
    std::vector<std::string> args(argv + 1, argv + argc);
    Context ctx;
    try {
        Invocation inv = parse(args);
        if (inv.opts.help) {
            std::fputs(help_text().c_str(), stdout);
            return 0;
        }
        if (inv.opts.version) {
            std::printf("machctl %s (machkit)\n", MK_VERSION);
            return 0;
        }
        ctx.opts = inv.opts;
        ctx.tty = ::isatty(STDOUT_FILENO);
        ctx.colors = colors_wanted(ctx.tty);
        if (pages(inv.verb)) pager_open(ctx.opts.no_pager);
        auto it = handlers().find(inv.verb);
        if (it == handlers().end()) throw mk::core::UsageError("Unknown command verb '" + inv.verb + "'.");
        int rc = it->second(ctx, inv.args);
        std::fflush(stdout);
        return rc;
    } catch (const mk::core::UsageError& e) {
        std::fprintf(stderr, "machctl: %s\nSee 'machctl --help'.\n", e.what());
        return 1;  // machinectl's EXIT_FAILURE: scripts test for 1, not getopt's customary 2
    } catch (const Failure& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    } catch (const ClientError& e) {
        if (e.kind == ClientError::Kind::no_daemon)
            std::fprintf(stderr, "machd is not running: start it with 'machd' (or systemctl start machd).\n");
        else if (e.kind == ClientError::Kind::no_bus)
            std::fprintf(stderr, "%s (is dbus-daemon running? DBUS_SYSTEM_BUS_ADDRESS selects the bus)\n", e.what());
        else
            std::fprintf(stderr, "%s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "machctl: %s\n", mk::core::describe(e).c_str());
        return 1;
    }
}

}  // namespace
