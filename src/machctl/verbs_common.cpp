#include <chrono>
#include <thread>

#include "core/base/strings.hpp"
#include "machctl/pager.hpp"
#include "machctl/table_tty.hpp"
#include "machctl/verbs.hpp"

namespace mk::machctl {

void Context::print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                          const TableStyle& style, size_t ellipsize) const {
    bool legend = !opts.no_legend;
    std::string text = tty && !opts.full
                           ? format_table_tty(header, rows, legend, style, terminal_columns(), colors, ellipsize)
                       : tty ? format_table_tty(header, rows, legend, style, 0, colors, ellipsize)
                             : format_table(header, rows, legend, style);
    std::fputs(text.c_str(), stdout);
}

std::string describe_remote(const ClientError& e) {
    // The manager may echo our input, or pass on a guest's text (machined does not escape either).
    std::string msg = core::escape_control_chars(e.what());
    if (e.name == bus::kAccessDenied) {
        // dbus-daemon's policy rejection is a paragraph about match rules; say it in a line.
        if (msg.starts_with("Rejected send message")) msg = "Access denied";
        msg += " (machctl needs root for this; try sudo)";
    } else if (e.name == bus::kUnknownMethod || e.name == bus::kUnknownInterface) {
        msg = "the machine manager on this bus does not implement this (it needs machd's io.machkit.Manager1)";
    }
    return msg;
}

bool is_no_such(const ClientError& e) { return e.kind == ClientError::Kind::remote && e.name == bus::kNoSuchMachine; }

std::string get(const std::map<std::string, std::string>& m, const std::string& k) {
    auto it = m.find(k);
    return it == m.end() ? std::string() : it->second;
}

json props_json(const std::vector<bus::Property>& props) {
    json j = json::object();
    for (const auto& p : props) j[p.name] = property_json(p);
    return j;
}

const bus::Property* find_prop(const std::vector<bus::Property>& props, const std::string& name) {
    for (const auto& p : props)
        if (p.name == name) return &p;
    return nullptr;
}

uint64_t now_usec() {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

bool machine_gone(Context& c, const std::string& name) {
    try {
        c.client().machine_path(name);
        return false;
    } catch (const ClientError& e) {
        if (is_no_such(e)) return true;
        throw;
    }
}

bool wait_gone(Context& c, const std::string& name, double seconds) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!machine_gone(c, name)) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
}

namespace {

// In machined 252's introspection order (the client orders them), as machinectl prints them
// against machined.
int print_props(Context& c, const std::vector<bus::Property>& props, bool& first, json& all) {
    auto wanted = [&](const bus::Property& p) {
        if (c.opts.properties.empty()) return true;
        return std::find(c.opts.properties.begin(), c.opts.properties.end(), p.name) != c.opts.properties.end();
    };
    if (c.is_json()) {
        json j = json::object();
        for (const auto& p : props)
            if (wanted(p)) j[p.name] = property_json(p);
        all.push_back(j);
        return 0;
    }
    if (!first) std::printf("\n");
    first = false;
    for (const auto& p : props) {
        if (!wanted(p)) continue;
        std::string v = property_text(p);
        if (v.empty() && !c.opts.all) continue;
        if (c.opts.value) std::printf("%s\n", v.c_str());
        else std::printf("%s=%s\n", p.name.c_str(), v.c_str());
    }
    return 0;
}

}  // namespace

int show_objects(Context& c, const std::vector<std::string>& names, bool images) {
    bool first = true;
    json all = json::array();
    if (names.empty()) {
        auto props =
            bus_call("Could not get properties", [&] { return c.client().properties(kManagerPath, kManagerInterface); });
        print_props(c, props, first, all);
    }
    for (const auto& name : names) {
        auto path = images ? bus_call("Could not get path to image", [&] { return c.client().image_path(name); })
                           : bus_call("Could not get path to machine", [&] { return c.client().machine_path(name); });
        auto props = bus_call("Could not get properties",
                              [&] { return c.client().properties(path, images ? kImageInterface : kMachineInterface); });
        print_props(c, props, first, all);
    }
    if (c.is_json()) c.emit_json(all.size() == 1 && c.opts.output != Output::json_seq ? all[0] : all);
    return 0;
}

}  // namespace mk::machctl
