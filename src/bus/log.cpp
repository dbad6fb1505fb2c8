#include "bus/log.hpp"

#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cstdio>

namespace mk::bus {

namespace {

// systemd's SD_MESSAGE_MACHINE_START / SD_MESSAGE_MACHINE_STOP (sd-messages.h).
constexpr const char* kMachineStart = "24d8d4452573402496068381a6312df2";
constexpr const char* kMachineStop = "58432bd3bace477cb514b56381b8a758";

void send(int priority, const std::string& text, const std::string& machine, const char* message_id, pid_t leader) {
    if (!logging_to_journal()) {
        std::fprintf(stderr, "machd: %s\n", text.c_str());
        return;
    }
    std::string prio = "PRIORITY=" + std::to_string(priority), msg = "MESSAGE=" + text;
    std::string m = "MACHINE=" + machine, name = "NAME=" + machine, lead = "LEADER=" + std::to_string(leader);
    std::string id = std::string("MESSAGE_ID=") + (message_id ? message_id : "");
    iovec iov[8];
    int n = 0;
    auto add = [&](const std::string& s) { iov[n++] = iovec{const_cast<char*>(s.data()), s.size()}; };
    add(msg);
    add(prio);
    static const std::string ident = "SYSLOG_IDENTIFIER=machd";
    add(ident);
    if (!machine.empty()) add(m);
    if (message_id) {
        add(id);
        add(name);
        if (leader > 0) add(lead);
    }
    // The journal gone away (journald restarting): the line still goes somewhere.
    if (sd_journal_sendv(iov, n) < 0) std::fprintf(stderr, "machd: %s\n", text.c_str());
}

}  // namespace

bool logging_to_journal() {
    static const bool journal = ::access("/run/systemd/journal/socket", F_OK) == 0;
    return journal;
}

void log_line(int priority, const std::string& text, const std::string& machine) {
    send(priority, text, machine, nullptr, 0);
}

void log_machine_started(const std::string& name, pid_t leader) {
    send(LOG_INFO, "New machine " + name + ".", name, kMachineStart, leader);
}

void log_machine_stopped(const std::string& name, pid_t leader) {
    send(LOG_INFO, "Machine " + name + " terminated.", name, kMachineStop, leader);
}

}  // namespace mk::bus
