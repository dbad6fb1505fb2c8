// Device rules -> cgroup2 device program: the compiled program, run by a small interpreter of the
// instructions it uses, answers as the reference device_rules_allow() for every request over a
// grid of devices and accesses; the reference itself is checked against hand-written cases (last
// matching rule wins per access, default deny, `a` resets). The kernel's verifier and real opens
// are tests/integration/test_oci_devices.py's.
#include "core/kernel/device_filter.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

#include "core/base/error.hpp"
#include "core/kernel/cgroup_resources.hpp"
#include "core/spawn/oci_config.hpp"

using namespace mk::core;

namespace {

// Runs a cgroup device program on one context. Only what a device program may use: 32-bit loads
// from the context, 32-bit ALU, 32- and 64-bit conditional jumps with immediates, exit.
int run(const std::vector<bpf_insn>& prog, uint32_t type, uint32_t access, uint32_t major, uint32_t minor) {
    uint32_t ctx[3] = {(access << 16) | type, major, minor};
    uint64_t reg[11] = {};
    size_t pc = 0;
    for (int steps = 0; steps < 100000; steps++) {
        if (pc >= prog.size()) throw std::runtime_error("fell off the program");
        const bpf_insn& i = prog[pc++];
        uint8_t cls = BPF_CLASS(i.code);
        if (cls == BPF_LDX) {
            if (i.code != (BPF_LDX | BPF_MEM | BPF_W) || i.src_reg != 1 || i.off % 4 || i.off < 0 || i.off > 8)
                throw std::runtime_error("bad load");
            reg[i.dst_reg] = ctx[i.off / 4];
        } else if (cls == BPF_ALU) {
            uint32_t src = BPF_SRC(i.code) == BPF_K ? static_cast<uint32_t>(i.imm) : static_cast<uint32_t>(reg[i.src_reg]);
            uint32_t dst = static_cast<uint32_t>(reg[i.dst_reg]);
            switch (BPF_OP(i.code)) {
            case BPF_MOV: dst = src; break;
            case BPF_AND: dst &= src; break;
            case BPF_RSH: dst >>= src; break;
            default: throw std::runtime_error("unexpected ALU op");
            }
            reg[i.dst_reg] = dst;  // 32-bit ALU zero-extends
        } else if (cls == BPF_JMP || cls == BPF_JMP32) {
            if (BPF_OP(i.code) == BPF_EXIT) return static_cast<int>(reg[0]);
            if (BPF_SRC(i.code) != BPF_K) throw std::runtime_error("unexpected jump source");
            uint64_t a = cls == BPF_JMP32 ? static_cast<uint32_t>(reg[i.dst_reg]) : reg[i.dst_reg];
            uint64_t b = cls == BPF_JMP32 ? static_cast<uint32_t>(i.imm) : static_cast<uint64_t>(int64_t{i.imm});
            bool taken;
            switch (BPF_OP(i.code)) {
            case BPF_JEQ: taken = a == b; break;
            case BPF_JNE: taken = a != b; break;
            default: throw std::runtime_error("unexpected jump op");
            }
            if (i.off < 0) throw std::runtime_error("backward jump");
            if (taken) pc += i.off;
        } else {
            throw std::runtime_error("unexpected instruction class");
        }
    }
    throw std::runtime_error("no exit");
}

std::vector<OciDeviceRule> rules_of(const char* json) {
    return parse_oci_resources(std::string(R"({"devices": )") + json + "}").devices;
}

// Every combination of type, access subset and a few majors/minors around the rules' numbers.
void expect_program_matches_reference(const std::vector<OciDeviceRule>& rules) {
    std::vector<bpf_insn> prog = compile_device_filter(rules);
    const char* accesses[] = {"r", "w", "m", "rw", "rm", "wm", "rwm"};
    for (char type : {'c', 'b'})
        for (uint32_t major : {0u, 1u, 5u, 7u, 10u, 136u, 4095u, 4294967295u})
            for (uint32_t minor : {0u, 1u, 3u, 5u, 200u, 1048575u})
                for (const char* access : accesses) {
                    uint32_t bits = 0;
                    for (const char* c = access; *c; c++)
                        bits |= *c == 'r' ? BPF_DEVCG_ACC_READ : *c == 'w' ? BPF_DEVCG_ACC_WRITE : BPF_DEVCG_ACC_MKNOD;
                    bool want = device_rules_allow(rules, {type, major, minor, access});
                    int got = run(prog, type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR, bits, major, minor);
                    ASSERT_EQ(got, want ? 1 : 0) << type << " " << major << ":" << minor << " " << access;
                }
    EXPECT_EQ(run(prog, BPF_DEVCG_DEV_CHAR, 0, 1, 3), 0) << "a request without access";
}

TEST(DeviceFilter, ReferenceSemantics) {
    // podman's list: deny everything, then the runtime's defaults.
    auto rules = rules_of(R"([{"allow": false, "access": "rwm"}])");
    auto defaults = oci_default_device_rules();
    rules.insert(rules.end(), defaults.begin(), defaults.end());
    EXPECT_TRUE(device_rules_allow(rules, {'c', 1, 3, "rw"}));    // /dev/null
    EXPECT_TRUE(device_rules_allow(rules, {'c', 136, 7, "rw"}));  // a pty
    EXPECT_TRUE(device_rules_allow(rules, {'b', 7, 0, "m"}));     // mknod of any device
    EXPECT_FALSE(device_rules_allow(rules, {'b', 7, 0, "r"}));    // loop0
    EXPECT_FALSE(device_rules_allow(rules, {'c', 1, 1, "r"}));    // /dev/mem
    EXPECT_FALSE(device_rules_allow(rules, {'b', 7, 0, "rm"}));   // m allowed, r not
    EXPECT_FALSE(device_rules_allow({}, {'c', 1, 3, "r"}));       // default deny

    // The last matching rule wins, per access.
    auto last = rules_of(R"([{"allow": true, "type": "c", "major": 1, "access": "rwm"},
                             {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"}])");
    EXPECT_TRUE(device_rules_allow(last, {'c', 1, 3, "r"}));
    EXPECT_FALSE(device_rules_allow(last, {'c', 1, 3, "w"}));
    EXPECT_FALSE(device_rules_allow(last, {'c', 1, 3, "rw"}));
    EXPECT_TRUE(device_rules_allow(last, {'c', 1, 5, "rw"}));
    EXPECT_FALSE(device_rules_allow(last, {'b', 1, 5, "r"}));
    // Accesses granted by two rules add up.
    auto split = rules_of(R"([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"},
                              {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}])");
    EXPECT_TRUE(device_rules_allow(split, {'c', 1, 3, "rw"}));
    EXPECT_FALSE(device_rules_allow(split, {'c', 1, 3, "rwm"}));
    // `allow a` after denials opens everything; a later denial closes one device again.
    auto open = rules_of(R"([{"allow": false, "type": "c", "major": 1, "minor": 1},
                             {"allow": true, "access": "r"},
                             {"allow": false, "type": "b", "major": 7}])");
    EXPECT_TRUE(device_rules_allow(open, {'c', 1, 1, "rwm"}));  // `a` is every access, whatever access says
    EXPECT_FALSE(device_rules_allow(open, {'b', 7, 0, "r"}));
    EXPECT_TRUE(device_rules_allow(open, {'b', 8, 0, "w"}));
}

TEST(DeviceFilter, ProgramAnswersAsTheReference) {
    auto podman = rules_of(R"([{"allow": false, "access": "rwm"}])");
    auto defaults = oci_default_device_rules();
    podman.insert(podman.end(), defaults.begin(), defaults.end());
    expect_program_matches_reference(podman);
    expect_program_matches_reference({});
    expect_program_matches_reference(rules_of(R"([{"allow": true, "type": "a"}])"));
    expect_program_matches_reference(rules_of(R"([{"allow": true, "type": "c", "major": 1, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"},
        {"allow": true, "type": "b", "minor": 0, "access": "rm"},
        {"allow": false, "type": "b", "major": 7, "access": "m"},
        {"allow": true, "type": "c", "major": 4095, "minor": 1048575, "access": "r"},
        {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "r"},
        {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "w"}])"));
    // Numbers past the config parser's bounds still compare exactly (32-bit jumps).
    expect_program_matches_reference(
        {OciDeviceRule{.allow = true, .type = 'c', .major = 4294967295, .minor = 0, .access = "r"},
         OciDeviceRule{.allow = true, .type = 'b', .major = 2147483648, .minor = 1, .access = ""}});
    expect_program_matches_reference(rules_of(R"([{"allow": false, "type": "c", "major": 1, "minor": 1},
        {"allow": true, "access": "r"}, {"allow": false, "type": "b", "major": 7, "access": "rw"},
        {"allow": true, "type": "b", "major": 7, "minor": 0, "access": "w"}])"));
}

TEST(DeviceFilter, RulesBeforeTheLastWildcardAreDropped) {
    auto many = rules_of(R"([{"allow": true, "type": "c", "major": 1}, {"allow": true, "type": "c", "major": 2},
                             {"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3}])");
    auto tail = rules_of(R"([{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3}])");
    EXPECT_EQ(compile_device_filter(many).size(), compile_device_filter(tail).size());
    expect_program_matches_reference(many);
}

TEST(DeviceFilter, BadRulesAreRefusedNamingTheRule) {
    auto error_of = [](const std::vector<OciDeviceRule>& rules) {
        try {
            compile_device_filter(rules);
        } catch (const UsageError& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    OciDeviceRule r{.allow = true, .type = 'c', .major = 1, .minor = 3, .access = "rx"};
    EXPECT_EQ(error_of({r}), "device rule 'allow c 1:3 rx': access may hold only r, w and m");
    r.access = "r";
    r.type = 'p';
    EXPECT_EQ(error_of({r}), "device rule 'allow p 1:3 r': type must be a, b or c");
    r.type = 'c';
    r.major = 4294967296;
    EXPECT_NE(error_of({r}).find("major must be 0..4294967295"), std::string::npos);
    r.major = -1;  // runc's "any"
    EXPECT_EQ(error_of({r}), "no error");
    // Bounded (the verifier's limit); rules before `a` do not count.
    std::vector<OciDeviceRule> many(kMaxDeviceRules, r);
    EXPECT_EQ(error_of(many), "no error");
    many.push_back(r);
    EXPECT_EQ(error_of(many), "1025 device rules (after the last 'a' rule): at most 1024 fit one cgroup device program");
    many.push_back(OciDeviceRule{.allow = false, .type = 'a', .major = std::nullopt, .minor = std::nullopt, .access = ""});
    EXPECT_EQ(error_of(many), "no error");
}

TEST(DeviceFilter, PlannedOnlyWithoutTheV1Controller) {
    auto rules = rules_of(R"([{"allow": false, "access": "rwm"}])");
    EXPECT_TRUE(plan_device_program(rules, CgroupControllers{{}, {"memory", "pids"}}).has_value());
    EXPECT_TRUE(plan_device_program(rules, CgroupControllers{{}, {}}).has_value());  // cgroup2 with no controllers
    EXPECT_FALSE(plan_device_program(rules, CgroupControllers{{"devices", "memory"}, {"hugetlb"}}).has_value());
    EXPECT_FALSE(plan_device_program({}, CgroupControllers{{}, {"memory"}}).has_value());
    // And the v1 writes are then left out.
    OciResources r;
    r.devices = rules;
    EXPECT_TRUE(plan_cgroup_resources(r, CgroupControllers{{}, {"memory"}}).empty());
    EXPECT_TRUE(plan_cgroup_update(r, CgroupControllers{{}, {"memory"}}).empty());
}

}  // namespace
