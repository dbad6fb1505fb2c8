#include "core/criu/protobuf.hpp"

#include <stdexcept>

namespace mk::core::criu {

void ProtoWriter::put_varint(uint64_t value) {
    while (value >= 0x80) {
        data_.push_back(static_cast<char>((value & 0x7f) | 0x80));
        value >>= 7;
    }
    data_.push_back(static_cast<char>(value));
}

void ProtoWriter::add_varint(uint32_t field, uint64_t value) {
    put_varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(WireType::Varint));
    put_varint(value);
}

void ProtoWriter::add_bytes(uint32_t field, std::string_view value) {
    put_varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(WireType::Bytes));
    put_varint(value.size());
    data_.append(value);
}

uint64_t ProtoReader::get_varint() {
    uint64_t value = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (pos_ >= data_.size()) throw std::runtime_error("protobuf: truncated varint");
        auto byte = static_cast<uint8_t>(data_[pos_++]);
        value |= static_cast<uint64_t>(byte & 0x7f) << shift;
        if (!(byte & 0x80)) return value;
    }
    throw std::runtime_error("protobuf: varint longer than ten bytes");
}

bool ProtoReader::next(ProtoField& out) {
    if (pos_ >= data_.size()) return false;
    uint64_t key = get_varint();
    uint64_t number = key >> 3;
    if (number == 0 || number > 0x1fffffff) throw std::runtime_error("protobuf: invalid field number");
    out = ProtoField{};
    out.number = static_cast<uint32_t>(number);
    switch (key & 7) {
    case 0:
        out.type = WireType::Varint;
        out.varint = get_varint();
        return true;
    case 1:
    case 5: {
        size_t width = (key & 7) == 1 ? 8 : 4;
        if (data_.size() - pos_ < width) throw std::runtime_error("protobuf: truncated fixed-width field");
        uint64_t v = 0;
        for (size_t i = 0; i < width; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
        pos_ += width;
        out.type = width == 8 ? WireType::Fixed64 : WireType::Fixed32;
        out.varint = v;
        return true;
    }
    case 2: {
        uint64_t len = get_varint();
        if (len > data_.size() - pos_) throw std::runtime_error("protobuf: field length past the end of the message");
        out.type = WireType::Bytes;
        out.bytes = data_.substr(pos_, static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len);
        return true;
    }
    default: throw std::runtime_error("protobuf: unsupported wire type " + std::to_string(key & 7));
    }
}

}  // namespace mk::core::criu
