// machctl's output: tables as machinectl prints them, Key=Value property lines, time and size
// formatting, and JSON (nlohmann) in the --output modes. Pure functions over strings; no bus.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "bus/machine_client.hpp"
#include "core/base/human.hpp"
#include "machctl/cli.hpp"

namespace mk::machctl {

// Keys keep their insertion order: machinectl prints them in column (or property) order.
using json = nlohmann::ordered_json;

// Columns padded to their widest cell, separated by one space, the last one unpadded; header
// line unless `legend` is false. A cell with newlines spans that many lines, as systemd's tables.
// Terminal columns of UTF-8 text: one per code point ("…" is one), which is right for what
// machctl prints (names, addresses, os-release fields).
size_t columns_of(std::string_view s);

struct TableStyle {
    std::vector<bool> right;             // per column: right-aligned data (machinectl's ID and PERCENT)
    bool pad_header = false;             // keep the header's last cell padded (machinectl 252's list-transfers)
    bool measure_hidden_header = false;  // columns as wide as the header even when it is not shown (ditto)
};
std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                         bool legend, const TableStyle& style = {});

// "Mon 2026-11-23 19:04:12 UTC" in the local zone ("n/a" for 0).
std::string format_timestamp(uint64_t usec_realtime);
using core::format_bytes;     // "1.5G", "512B", "-" for UINT64_MAX
using core::format_timespan;  // "144ms", "3min 2s"
// Bytes with an optional K/M/G/T/P/E suffix (base 1024), or "infinity"/"-".
uint64_t parse_bytes(const std::string& s);

// "1.2M/s" out of a transfer's status line ("Got 40% of URL. 3s left at 1.2M/s.", as importd's);
// "" for any other line.
std::string rate_of_status_line(const std::string& line);

std::string hex(const std::vector<uint8_t>& bytes);
std::string address_to_string(const bus::Address& a);

// The value of a property as machinectl show prints it; empty means "empty" (hidden without -a).
std::string property_text(const bus::Property& p);
json property_json(const bus::Property& p);

// `records` byte for byte as machinectl 252 (systemd's JSON writer): json → one compact line;
// json-pretty → tab-indented, "key" : value; json-seq → RFC 7464 records: the whole of a table
// (`table`) as one, else each element of an array.
std::string format_json(const json& records, Output mode, bool table = false);

}  // namespace mk::machctl
