// A minimal protocol-buffers wire codec: just what criu's RPC (criu/rpc.proto, proto2) needs.
//
// Why hand-written: Debian 12 ships no libcriu-dev worth linking against a newer criu binary, and
// pulling protoc + libprotobuf into the statically linked spawn for ~40 fields is out of
// proportion. The reader parses criu's replies, which come from another program: it bounds every
// length against the buffer and throws std::runtime_error on anything malformed, never reads past
// the end (fuzzed in tests/fuzz/fuzz_criu_rpc.cpp).
//
// Thread-compatible value types; no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mk::core::criu {

class ProtoWriter {
public:
    void add_varint(uint32_t field, uint64_t value);
    void add_bool(uint32_t field, bool value) { add_varint(field, value ? 1 : 0); }
    // proto2 int32: negative values are sign-extended to ten bytes, as protobuf does.
    void add_int32(uint32_t field, int32_t value) { add_varint(field, static_cast<uint64_t>(static_cast<int64_t>(value))); }
    void add_bytes(uint32_t field, std::string_view value);
    void add_message(uint32_t field, const ProtoWriter& message) { add_bytes(field, message.data()); }

    [[nodiscard]] const std::string& data() const noexcept { return data_; }

private:
    void put_varint(uint64_t value);
    std::string data_;
};

enum class WireType : uint8_t { Varint = 0, Fixed64 = 1, Bytes = 2, Fixed32 = 5 };

struct ProtoField {
    uint32_t number = 0;
    WireType type = WireType::Varint;
    uint64_t varint = 0;     // Varint, Fixed64, Fixed32
    std::string_view bytes;  // Bytes: a view into the reader's buffer
};

class ProtoReader {
public:
    explicit ProtoReader(std::string_view data) noexcept : data_(data) {}

    // Reads the next field into `out`. Returns false at the end of the buffer. Throws
    // std::runtime_error on a truncated or malformed field (groups, unknown wire types, field 0).
    bool next(ProtoField& out);

private:
    uint64_t get_varint();
    std::string_view data_;
    size_t pos_ = 0;
};

// The int32 a varint field holds (protobuf truncates to the low 32 bits).
inline int32_t varint_int32(uint64_t v) noexcept { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

}  // namespace mk::core::criu
