// Interface between seccomp_cache.cpp and the build-time generated seccomp_precompiled.cpp.
#pragma once

#include <linux/filter.h>

#include <cstddef>

namespace mk::core::detail {

struct PrecompiledProgram {
    const sock_filter* insns;
    size_t len;
};

struct PrecompiledPolicy {
    const char* key;  // seccomp_policy_key()
    const PrecompiledProgram* programs;
    size_t count;
};

extern const PrecompiledPolicy kPrecompiledSeccomp[];
extern const size_t kPrecompiledSeccompCount;

}  // namespace mk::core::detail
