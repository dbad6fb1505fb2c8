// --link-journal's decision (core/spawn/journal_link): nspawn's modes against every state of the
// host's /var/log/journal/ID, the machine ID's absence and the host's own ID.
#include <gtest/gtest.h>

#include "core/base/error.hpp"
#include "core/spawn/journal_link.hpp"

using namespace mk::core;

namespace {

const Uuid kGuest = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const Uuid kHost = {16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
using H = HostJournalPath;
using A = JournalLinkPlan::Action;

A action(LinkJournalMode m, H state, bool kept = true, std::optional<Uuid> id = kGuest) {
    return plan_journal_link(m, id, kHost, state, kept).action;
}

}  // namespace

TEST(JournalLink, ModesAsNspawn) {
    auto p = plan_journal_link(LinkJournalMode::Host, kGuest, kHost, H::absent, true);
    EXPECT_EQ(p.action, A::bind_host);
    EXPECT_EQ(p.host_path, "/var/log/journal/0102030405060708090a0b0c0d0e0f10");
    EXPECT_EQ(p.guest_path, p.host_path);
    EXPECT_EQ(action(LinkJournalMode::TryHost, H::directory), A::bind_host);
    EXPECT_EQ(action(LinkJournalMode::Guest, H::absent), A::symlink_guest);
    EXPECT_EQ(action(LinkJournalMode::Guest, H::symlink_to_guest), A::symlink_guest);
    EXPECT_TRUE(plan_journal_link(LinkJournalMode::Guest, kGuest, kHost, H::empty_directory, true).remove_empty_host_dir);
    EXPECT_EQ(action(LinkJournalMode::No, H::directory), A::none);
    // auto: the host's directory for the machine decides.
    EXPECT_EQ(action(LinkJournalMode::Auto, H::absent), A::none);
    EXPECT_EQ(action(LinkJournalMode::Auto, H::directory), A::bind_host);
    EXPECT_EQ(action(LinkJournalMode::Auto, H::symlink_to_guest), A::none);
}

TEST(JournalLink, TryModesSkipWherePlainModesFail) {
    EXPECT_THROW(action(LinkJournalMode::Host, H::other), UsageError);
    EXPECT_EQ(action(LinkJournalMode::TryHost, H::other), A::none);
    EXPECT_THROW(action(LinkJournalMode::Guest, H::directory), UsageError);
    EXPECT_EQ(action(LinkJournalMode::TryGuest, H::directory), A::none);
    EXPECT_THROW(action(LinkJournalMode::Guest, H::absent, false), UsageError);  // --ephemeral: nothing to link to
    EXPECT_EQ(action(LinkJournalMode::TryGuest, H::absent, false), A::none);
    EXPECT_EQ(action(LinkJournalMode::Host, H::absent, false), A::bind_host);  // host mode works on any tree
    EXPECT_THROW(action(LinkJournalMode::Host, H::absent, true, std::nullopt), UsageError);
    EXPECT_EQ(action(LinkJournalMode::Auto, H::directory, true, std::nullopt), A::none);
    EXPECT_THROW(plan_journal_link(LinkJournalMode::Guest, kHost, kHost, H::absent, true), UsageError);
    EXPECT_EQ(plan_journal_link(LinkJournalMode::TryGuest, kHost, kHost, H::absent, true).action, A::none);
}
