// Build-time generator: prints machctl's bash completion from the command table (src/machctl/cli).
#include <cstdio>

#include "machctl/cli.hpp"

int main() {
    std::fputs(mk::machctl::bash_completion().c_str(), stdout);
    return 0;
}
