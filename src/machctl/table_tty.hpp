// Tables for a person at a terminal, rendered by libsmartcols: fitted to the terminal's width
// (the ellipsized column shrinks, its long cells end in "…"), the header underlined when colors
// are on, multi-line cells kept. Piped output never comes here: it stays machinectl 252's bytes
// (output.hpp's format_table). Pure apart from libsmartcols' allocations.
#pragma once

#include <string>
#include <vector>

#include "machctl/output.hpp"

namespace mk::machctl {

// `columns` 0 = no limit. `ellipsize` is the column that gives up width first.
std::string format_table_tty(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                             bool legend, const TableStyle& style, unsigned columns, bool colors, size_t ellipsize = 0);

// `text` cut to `width` terminal columns, ending in "…" when cut (systemd's ellipsize at 100%;
// "..." outside a UTF-8 locale).
std::string ellipsize_end(const std::string& text, size_t width);

}  // namespace mk::machctl
