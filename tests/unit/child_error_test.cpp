// ChildError (core/base/child_error.hpp): a child's failed step crosses a pipe and a SEQPACKET
// socket whole, truncated safely, and reads as one sentence in the parent.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "core/base/child_error.hpp"
#include "core/base/step_pipe.hpp"
#include "core/base/unique_fd.hpp"

using namespace mk::core;

TEST(ChildError, WhatIsTheMessageElseStepAndErrno) {
    EXPECT_EQ(ChildError::make("setns", ENOENT).what(), std::string("setns: ") + strerror(ENOENT));
    EXPECT_EQ(ChildError::make("setns", 0).what(), "setns");
    EXPECT_EQ(ChildError::make("mount", EPERM, "cannot mount the tree: Operation not permitted").what(),
              "cannot mount the tree: Operation not permitted");
    std::string long_step(200, 's'), long_text(2000, 't');
    ChildError e = ChildError::make(long_step.c_str(), 1, long_text.c_str());
    EXPECT_EQ(e.step_name().size(), sizeof e.step - 1);
    EXPECT_EQ(e.what().size(), sizeof e.message - 1);
}

TEST(ChildError, CrossesAPipeFromAForkedChild) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ChildError::make("chroot", EACCES).send_to(wr.get());
        _exit(1);
    }
    wr.reset();
    auto e = ChildError::receive_from(rd.get());
    ASSERT_TRUE(e);
    EXPECT_EQ(e->err, EACCES);
    EXPECT_EQ(e->step_name(), "chroot");
    EXPECT_FALSE(ChildError::receive_from(rd.get()));  // EOF: nothing more
    EXPECT_EQ(wait_exit_code(pid), 1);
}

TEST(ChildError, CrossesASeqpacketSocket) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    ChildError::make("exec", ENOEXEC, "cannot execute /bin/x").send_to(a.get());
    auto e = ChildError::receive_from(b.get());
    ASSERT_TRUE(e);
    EXPECT_EQ(e->what(), "cannot execute /bin/x");
}
