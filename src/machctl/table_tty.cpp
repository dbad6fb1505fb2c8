#include "machctl/table_tty.hpp"

#include <langinfo.h>
#include <libsmartcols.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

namespace mk::machctl {

namespace {

size_t widest_line(const std::string& cell) {
    size_t w = 0, start = 0;
    for (;;) {
        auto nl = cell.find('\n', start);
        w = std::max(w, columns_of(cell.substr(start, nl == std::string::npos ? std::string::npos : nl - start)));
        if (nl == std::string::npos) return w;
        start = nl + 1;
    }
}

}  // namespace

std::string ellipsize_end(const std::string& text, size_t width) {
    if (columns_of(text) <= width) return text;
    if (width == 0) return {};
    // As systemd's special_glyph(): "…" only where the locale speaks UTF-8 (libsmartcols would
    // print it as \x escapes otherwise).
    static const bool utf8 = std::string(nl_langinfo(CODESET)) == "UTF-8";
    if (!utf8) return width <= 3 ? text.substr(0, width) : text.substr(0, width - 3) + "...";
    std::string out;
    size_t cols = 0;
    for (size_t i = 0; i < text.size();) {
        size_t len = 1;
        auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0xf0) len = 4;
        else if (c >= 0xe0) len = 3;
        else if (c >= 0xc0) len = 2;
        if (cols + 1 >= width) break;
        out.append(text, i, len);
        cols++;
        i += len;
    }
    return out + "\xe2\x80\xa6";
}

std::string format_table_tty(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                             bool legend, const TableStyle& style, unsigned columns, bool colors, size_t ellipsize) {
    // Fit: the natural width of every column; when the sum is wider than the terminal, the
    // ellipsized column gives up what is missing (down to 8 columns), its long cells cut with "…".
    std::vector<size_t> width(header.size(), 0);
    for (size_t i = 0; i < header.size(); i++) width[i] = legend ? columns_of(header[i]) : 0;
    for (const auto& r : rows)
        for (size_t i = 0; i < r.size() && i < width.size(); i++) width[i] = std::max(width[i], widest_line(r[i]));
    size_t total = width.empty() ? 0 : width.size() - 1;
    for (auto w : width) total += w;
    size_t limit = SIZE_MAX;
    if (columns && total > columns && ellipsize < width.size()) {
        size_t others = total - width[ellipsize];
        limit = columns > others + 8 ? columns - others : 8;
    }

    std::unique_ptr<libscols_table, decltype(&scols_unref_table)> tb(scols_new_table(), scols_unref_table);
    if (!tb) throw std::bad_alloc();
    scols_table_enable_colors(tb.get(), colors);
    scols_table_enable_noheadings(tb.get(), !legend);
    if (columns) scols_table_set_termwidth(tb.get(), columns);
    std::vector<libscols_column*> cols;
    for (size_t i = 0; i < header.size(); i++) {
        int flags = i < style.right.size() && style.right[i] ? SCOLS_FL_RIGHT : 0;
        bool multi = std::any_of(rows.begin(), rows.end(),
                                 [&](const auto& r) { return i < r.size() && r[i].find('\n') != std::string::npos; });
        if (multi) flags |= SCOLS_FL_WRAP;
        libscols_column* cl = scols_table_new_column(tb.get(), header[i].c_str(), 0, flags);
        if (!cl) throw std::bad_alloc();
        if (multi) scols_column_set_wrapfunc(cl, scols_wrapnl_chunksize, scols_wrapnl_nextchunk, nullptr);
        if (colors) scols_cell_set_color(scols_column_get_header(cl), "\033[4m");  // systemd's underlined header
        cols.push_back(cl);
    }
    for (const auto& r : rows) {
        libscols_line* ln = scols_table_new_line(tb.get(), nullptr);
        if (!ln) throw std::bad_alloc();
        for (size_t i = 0; i < r.size() && i < cols.size(); i++) {
            std::string text = i == ellipsize && limit != SIZE_MAX ? ellipsize_end(r[i], limit) : r[i];
            scols_line_set_data(ln, i, text.c_str());
        }
    }
    char* data = nullptr;
    if (scols_print_table_to_string(tb.get(), &data) < 0 || !data) throw std::bad_alloc();
    std::string out(data);
    std::free(data);
    if (!out.empty() && out.back() != '\n') out += '\n';
    return out;
}

}  // namespace mk::machctl
