#include "core/base/error.hpp"

namespace mk::core {

void throw_errno(int err, const std::string& what) { throw std::system_error(err, std::generic_category(), what); }

std::string describe(const std::exception& e) {
    // std::system_error::what() already reads "what: strerror".
    std::string s = e.what();
    for (char& c : s)
        if (c == '\n') c = ' ';
    return s;
}

}  // namespace mk::core
