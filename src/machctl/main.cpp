// machctl: the command line for machines, machinectl 252's verbs, options and output against
// machd (or systemd-machined) on the system bus. See docs/machctl.md and docs/man/machctl.1.
#include <cstdio>

#include <unistd.h>

#include <clocale>
#include <cstdlib>
#include <cstring>

#include "core/base/error.hpp"
#include "machctl/pager.hpp"
#include "machctl/verbs.hpp"

namespace mk::machctl {
namespace {

// The verb's name, arguments and help live in cli.cpp's table; this only maps its id to the code.
// A new Verb without a case here fails to build (-Wswitch, -Werror).
int run_verb(Verb verb, Context& c, const std::vector<std::string>& a) {
    switch (verb) {
    case Verb::list: return verb_list(c, a);
    case Verb::status: return verb_status(c, a);
    case Verb::show: return verb_show(c, a);
    case Verb::start: return verb_start(c, a);
    case Verb::login: return verb_login(c, a);
    case Verb::shell: return verb_shell(c, a);
    case Verb::enable: return verb_enable(c, a, true);
    case Verb::disable: return verb_enable(c, a, false);
    case Verb::poweroff:
    case Verb::stop: return verb_poweroff(c, a);
    case Verb::reboot:
    case Verb::restart: return verb_reboot(c, a);
    case Verb::terminate: return verb_terminate(c, a);
    case Verb::kill: return verb_kill(c, a);
    case Verb::pause: return verb_pause(c, a);
    case Verb::checkpoint: return verb_checkpoint(c, a);
    case Verb::restore: return verb_restore(c, a);
    case Verb::resume: return verb_resume(c, a);
    case Verb::wait: return verb_wait(c, a);
    case Verb::bind: return verb_bind(c, a);
    case Verb::copy_to: return verb_copy(c, a, true);
    case Verb::copy_from: return verb_copy(c, a, false);
    case Verb::list_images: return verb_list_images(c, a);
    case Verb::image_status: return verb_image_status(c, a);
    case Verb::show_image: return verb_show_image(c, a);
    case Verb::clone: return verb_clone(c, a);
    case Verb::rename: return verb_rename(c, a);
    case Verb::read_only: return verb_read_only(c, a);
    case Verb::remove: return verb_remove(c, a);
    case Verb::set_limit: return verb_set_limit(c, a);
    case Verb::clean: return verb_clean(c, a);
    case Verb::pull_tar: return verb_pull(c, a, false);
    case Verb::pull_raw: return verb_pull(c, a, true);
    case Verb::import_tar: return verb_import(c, a, "tar");
    case Verb::import_raw: return verb_import(c, a, "raw");
    case Verb::import_fs: return verb_import(c, a, "fs");
    case Verb::pull_oci: return verb_pull_oci(c, a);
    case Verb::import_oci: return verb_import_oci(c, a);
    case Verb::export_tar: return verb_export(c, a, false);
    case Verb::export_raw: return verb_export(c, a, true);
    case Verb::list_transfers: return verb_list_transfers(c, a);
    case Verb::cancel_transfer: return verb_cancel_transfer(c, a);
    }
    throw mk::core::UsageError("Unknown command verb.");
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
        const VerbSpec* verb = find_verb(inv.verb);
        if (!verb) throw mk::core::UsageError("Unknown command verb '" + inv.verb + "'.");
        if (verb->paged) pager_open(ctx.opts.no_pager);
        int rc = run_verb(verb->id, ctx, inv.args);
        std::fflush(stdout);
        return rc;
    } catch (const mk::core::UsageError& e) {
        std::fprintf(stderr, "machctl: %s\nSee 'machctl --help'.\n", e.what());
        return 1;  // machinectl's EXIT_FAILURE: scripts test for 1, not getopt's customary 2
    } catch (const Failure& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    } catch (const ClientError& e) {
        if (e.kind == ClientError::Kind::no_daemon && ctx.opts.bus_target.user)
            std::fprintf(stderr, "Your machd is not running: start it with 'machd --user' on your session bus.\n");
        else if (e.kind == ClientError::Kind::no_daemon)
            std::fprintf(stderr, "machd is not running: start it with 'machd' (or systemctl start machd).\n");
        else if (e.kind == ClientError::Kind::no_bus && ctx.opts.bus_target.user) std::fprintf(stderr, "%s\n", e.what());
        else if (e.kind == ClientError::Kind::no_bus)
            std::fprintf(stderr, "%s (is dbus-daemon running? DBUS_SYSTEM_BUS_ADDRESS selects the bus)\n", e.what());
        else std::fprintf(stderr, "%s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "machctl: %s\n", mk::core::describe(e).c_str());
        return 1;
    }
}

}  // namespace
