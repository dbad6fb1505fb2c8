// libFuzzer target: what criu and a checkpoint directory hand us — criu_resp messages (protobuf
// from the criu process), mountinfo text, machkit-checkpoint.json. Checks invariants, not just the
// absence of crashes: bounded strings, and a record that decodes re-encodes to itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

#include "core/criu/plan.hpp"
#include "core/criu/rpc.hpp"

using namespace mk::core::criu;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view s(reinterpret_cast<const char*>(data), size);
    try {
        Response r = decode_response(s);
        if (r.cr_errmsg.size() > kMaxRpcString || r.notify_script.size() > kMaxRpcString) abort();
        if (r.version && r.version->gitid.size() > kMaxRpcString) abort();
    } catch (const std::runtime_error&) {
    }
    try {
        auto mounts = parse_mountinfo(s);
        if (mounts.size() > kMaxMounts) abort();
        for (const auto& m : mounts)
            if (m.root.empty() || m.root[0] != '/' || m.mountpoint.empty() || m.mountpoint[0] != '/') abort();
        auto ext = plan_external_mounts(mounts, mounts);
        if (ext.size() > mounts.size()) abort();
    } catch (const std::runtime_error&) {
    }
    try {
        CheckpointRecord r = decode_record(s);
        CheckpointRecord again = decode_record(encode_record(r));
        if (again.machine != r.machine || again.root != r.root || again.files.size() != r.files.size() ||
            again.mounts.size() != r.mounts.size() || again.stdio != r.stdio)
            abort();
    } catch (const std::runtime_error&) {
    }
    return 0;
}
