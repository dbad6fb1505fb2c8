#include "core/kernel/device_filter.hpp"

#include <limits>
#include <optional>
#include <string>

#include "core/base/error.hpp"

namespace mk::core {
namespace {

constexpr uint32_t kAll = BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD;

std::string describe(const OciDeviceRule& r) {
    auto num = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("*"); };
    return std::string(r.allow ? "allow " : "deny ") + r.type + " " + num(r.major) + ":" + num(r.minor) + " " +
           (r.access.empty() ? "rwm" : r.access);
}

uint32_t access_bits(std::string_view access, const OciDeviceRule* rule) {
    if (access.empty()) return rule ? kAll : 0;
    uint32_t bits = 0;
    for (char c : access) {
        switch (c) {
        case 'r': bits |= BPF_DEVCG_ACC_READ; break;
        case 'w': bits |= BPF_DEVCG_ACC_WRITE; break;
        case 'm': bits |= BPF_DEVCG_ACC_MKNOD; break;
        default:
            throw UsageError(rule ? "device rule '" + describe(*rule) + "': access may hold only r, w and m"
                                  : "device access '" + std::string(access) + "' may hold only r, w and m");
        }
    }
    return bits;
}

// A rule checked and reduced to what the program compares; nullopt = any.
struct Rule {
    bool allow = false;
    bool any_device = false;  // type 'a'
    uint32_t type = 0;        // BPF_DEVCG_DEV_CHAR / _BLOCK
    std::optional<uint32_t> major, minor;
    uint32_t access = kAll;
};

Rule checked(const OciDeviceRule& r) {
    Rule out;
    out.allow = r.allow;
    out.access = access_bits(r.access, &r);
    switch (r.type) {
    case 'a':
        out.any_device = true;
        out.access = kAll;
        return out;
    case 'c': out.type = BPF_DEVCG_DEV_CHAR; break;
    case 'b': out.type = BPF_DEVCG_DEV_BLOCK; break;
    default: throw UsageError("device rule '" + describe(r) + "': type must be a, b or c");
    }
    auto number = [&](const std::optional<int64_t>& v, const char* what) -> std::optional<uint32_t> {
        // -1 is runc's spelling of "any" (its Go structs cannot leave the field out).
        if (!v || *v == -1) return std::nullopt;
        if (*v < 0 || *v > std::numeric_limits<uint32_t>::max())
            throw UsageError("device rule '" + describe(r) + "': " + what + " must be 0..4294967295 or left out for any");
        return static_cast<uint32_t>(*v);
    };
    out.major = number(r.major, "major");
    out.minor = number(r.minor, "minor");
    return out;
}

bool matches(const Rule& r, uint32_t type, uint32_t major, uint32_t minor) {
    return r.any_device || (r.type == type && (!r.major || *r.major == major) && (!r.minor || *r.minor == minor));
}

// ---- instruction encoding (the uapi has no constructors; the kernel's are in linux/filter.h) ----
bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}
bpf_insn load_u32(uint8_t dst, uint8_t base, int16_t off) { return insn(BPF_LDX | BPF_MEM | BPF_W, dst, base, off, 0); }
bpf_insn alu32_imm(uint8_t op, uint8_t dst, uint32_t imm) {
    return insn(BPF_ALU | op | BPF_K, dst, 0, 0, static_cast<int32_t>(imm));
}
bpf_insn alu32_reg(uint8_t op, uint8_t dst, uint8_t src) { return insn(BPF_ALU | op | BPF_X, dst, src, 0, 0); }
// 32-bit compares: a major or minor above 2^31 is still one exact value.
bpf_insn jump32_imm(uint8_t op, uint8_t reg, uint32_t imm) {
    return insn(BPF_JMP32 | op | BPF_K, reg, 0, 0, static_cast<int32_t>(imm));
}
bpf_insn exit_insn() { return insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0); }

enum Reg : uint8_t { R0 = 0, R1, R2, R3, R4, R5 };

class Emitter {
public:
    void emit(bpf_insn i) { code_.push_back(i); }
    // A forward jump to the end of the current block (`next`) or to the final default deny (`end`).
    void jump_next(uint8_t op, uint8_t reg, uint32_t imm) { next_.push_back(add_jump(op, reg, imm)); }
    void jump_end(uint8_t op, uint8_t reg, uint32_t imm) { end_.push_back(add_jump(op, reg, imm)); }
    void answer(bool allow) {
        emit(alu32_imm(BPF_MOV, R0, allow ? 1 : 0));
        emit(exit_insn());
    }
    void close_block() {
        for (size_t at : next_) patch(at, code_.size());
        next_.clear();
    }
    std::vector<bpf_insn> finish() {
        close_block();
        for (size_t at : end_) patch(at, code_.size());
        answer(false);  // default deny
        return std::move(code_);
    }

private:
    size_t add_jump(uint8_t op, uint8_t reg, uint32_t imm) {
        code_.push_back(jump32_imm(op, reg, imm));
        return code_.size() - 1;
    }
    void patch(size_t at, size_t target) {
        size_t off = target - at - 1;
        // BPF jump offsets are 16-bit; the rule count a config can carry keeps every jump short
        // (a block is at most 8 instructions), but a jump past the range must fail loudly.
        if (off > size_t(std::numeric_limits<int16_t>::max()))
            throw UsageError("too many device rules for one device program");
        code_[at].off = static_cast<int16_t>(off);
    }
    std::vector<bpf_insn> code_;
    std::vector<size_t> next_, end_;
};

}  // namespace

bool device_rules_allow(const std::vector<OciDeviceRule>& rules, const DeviceRequest& request) {
    uint32_t type = request.type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR;
    uint32_t wanted = access_bits(request.access, nullptr);
    if (wanted == 0) return false;
    std::vector<Rule> checked_rules;
    checked_rules.reserve(rules.size());
    for (const auto& r : rules) checked_rules.push_back(checked(r));
    for (uint32_t bit : {BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE, BPF_DEVCG_ACC_MKNOD}) {
        if (!(wanted & bit)) continue;
        bool allowed = false;
        for (auto it = checked_rules.rbegin(); it != checked_rules.rend(); ++it)
            if ((it->access & bit) && matches(*it, type, request.major, request.minor)) {
                allowed = it->allow;
                break;
            }
        if (!allowed) return false;
    }
    return true;
}

std::vector<bpf_insn> compile_device_filter(const std::vector<OciDeviceRule>& rules) {
    std::vector<Rule> live;
    live.reserve(rules.size());
    for (const auto& r : rules) {
        Rule c = checked(r);
        if (c.any_device) live.clear();  // it decides every request the rules before it would
        live.push_back(c);
    }
    if (live.size() > kMaxDeviceRules)
        throw UsageError(std::to_string(live.size()) + " device rules (after the last 'a' rule): at most " +
                         std::to_string(kMaxDeviceRules) + " fit one cgroup device program");

    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }; access_type is
    // (access << 16) | type. R2 = type, R3 = the requested accesses not yet decided, R4 = major,
    // R5 = minor; R1 is a scratch register once the context is read.
    Emitter e;
    e.emit(load_u32(R2, R1, 0));
    e.emit(alu32_imm(BPF_AND, R2, 0xffff));
    e.emit(load_u32(R3, R1, 0));
    e.emit(alu32_imm(BPF_RSH, R3, 16));
    e.emit(load_u32(R4, R1, 4));
    e.emit(load_u32(R5, R1, 8));
    e.jump_end(BPF_JEQ, R3, 0);  // no access asked: nothing allows it

    // Last rule first: the first block that matches an undecided access decides it.
    for (auto it = live.rbegin(); it != live.rend(); ++it) {
        const Rule& r = *it;
        if (!r.any_device) {
            e.jump_next(BPF_JNE, R2, r.type);
            if (r.major) e.jump_next(BPF_JNE, R4, *r.major);
            if (r.minor) e.jump_next(BPF_JNE, R5, *r.minor);
        }
        if (r.access == kAll) {
            e.answer(r.allow);  // every undecided access is this rule's
        } else if (!r.allow) {
            // Denies if it names an access still undecided.
            e.emit(alu32_reg(BPF_MOV, R1, R3));
            e.emit(alu32_imm(BPF_AND, R1, r.access));
            e.jump_next(BPF_JEQ, R1, 0);
            e.answer(false);
        } else {
            // Allows what it names; answers once nothing is left undecided.
            e.emit(alu32_imm(BPF_AND, R3, ~r.access));
            e.jump_next(BPF_JNE, R3, 0);
            e.answer(true);
        }
        e.close_block();
    }
    return e.finish();
}

}  // namespace mk::core
