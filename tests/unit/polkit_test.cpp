// bus/polkit.hpp's pure part: which action and details a call asks polkit for (machined and
// importd 252's choices).
#include "bus/polkit.hpp"

#include <gtest/gtest.h>

namespace mk::bus {
namespace {

using Details = std::vector<std::pair<std::string, std::string>>;

PolkitRequest expect_request(PolkitCall call) {
    auto r = polkit_request_for(call);
    EXPECT_TRUE(r.has_value()) << call.interface << "." << call.member;
    return r.value_or(PolkitRequest{});
}

const std::string kMgr = "org.freedesktop.machine1.Manager";
const std::string kMach = "org.freedesktop.machine1.Machine";
const std::string kImg = "org.freedesktop.machine1.Image";

TEST(PolkitRequest, ManagerAndObjectFormsAskTheSame) {
    auto a = expect_request({kMgr, "TerminateMachine", "", {"web"}});
    auto b = expect_request({kMach, "Terminate", "web", {}});
    EXPECT_EQ(a.action, kPolkitManageMachines);
    EXPECT_EQ(a.details, (Details{{"machine", "web"}, {"verb", "terminate"}}));
    EXPECT_EQ(b.action, a.action);
    EXPECT_EQ(b.details, a.details);
    EXPECT_EQ(expect_request({kMgr, "KillMachine", "", {"web", "leader"}}).details,
              (Details{{"machine", "web"}, {"verb", "kill"}}));
    EXPECT_EQ(expect_request({kMgr, "UnregisterMachine", "", {"web"}}).details,
              (Details{{"machine", "web"}, {"verb", "unregister"}}));
}

TEST(PolkitRequest, EnteringAMachineHasItsOwnActionsAndHostTwins) {
    auto shell = expect_request({kMgr,
                                 "OpenMachineShell",
                                 "",
                                 {
                                     "web",
                                     "",
                                     "",
                                 }});
    EXPECT_EQ(shell.action, kPolkitShell);
    EXPECT_EQ(shell.details, (Details{{"machine", "web"}, {"user", "root"}, {"program", "/bin/sh"}, {"verb", "shell"}}));
    auto host_shell = expect_request({kMach, "OpenShell", ".host", {"alice", "/bin/bash"}});
    EXPECT_EQ(host_shell.action, kPolkitHostShell);
    EXPECT_EQ(host_shell.details,
              (Details{{"machine", ".host"}, {"user", "alice"}, {"program", "/bin/bash"}, {"verb", "shell"}}));
    EXPECT_EQ(expect_request({kMgr, "OpenMachineLogin", "", {"web"}}).action, kPolkitLogin);
    EXPECT_EQ(expect_request({kMgr, "OpenMachineLogin", "", {".host"}}).action, kPolkitHostLogin);
    EXPECT_EQ(expect_request({kMach, "OpenPTY", "web", {}}).action, kPolkitOpenPty);
    EXPECT_EQ(expect_request({kMgr, "OpenMachinePTY", "", {".host"}}).action, kPolkitHostOpenPty);
}

TEST(PolkitRequest, BindCopyAndRootDirectoryAreManageMachines) {
    auto bind = expect_request({kMgr, "BindMountMachine", "", {"web", "/srv", "/mnt"}});
    EXPECT_EQ(bind.action, kPolkitManageMachines);
    EXPECT_EQ(bind.details, (Details{{"machine", "web"}, {"verb", "bind"}, {"src", "/srv"}, {"dest", "/mnt"}}));
    // An empty destination is the source path, as machined resolves it before asking.
    auto copy = expect_request({kMach, "CopyToWithFlags", "web", {"/etc/hosts", ""}});
    EXPECT_EQ(copy.details, (Details{{"machine", "web"}, {"verb", "copy"}, {"src", "/etc/hosts"}, {"dest", "/etc/hosts"}}));
    EXPECT_EQ(expect_request({kMgr, "CopyFromMachine", "", {"web", "/a", "/b"}}).action, kPolkitManageMachines);
    EXPECT_EQ(expect_request({kMgr, "OpenMachineRootDirectory", "", {"web"}}).details,
              (Details{{"machine", "web"}, {"verb", "open_root_directory"}}));
}

TEST(PolkitRequest, ImagesAndThePool) {
    EXPECT_EQ(expect_request({kMgr, "RemoveImage", "", {"img"}}).details, (Details{{"image", "img"}, {"verb", "remove"}}));
    auto rename = expect_request({kImg, "Rename", "img", {"new"}});
    EXPECT_EQ(rename.action, kPolkitManageImages);
    EXPECT_EQ(rename.details, (Details{{"image", "img"}, {"verb", "rename"}, {"new_name", "new"}}));
    EXPECT_EQ(expect_request({kMgr, "CloneImage", "", {"img", "copy"}, true}).details,
              (Details{{"image", "img"}, {"verb", "clone"}, {"new_name", "copy"}}));
    PolkitCall mark{kMgr, "MarkImageReadOnly", "", {"img"}, true};
    EXPECT_EQ(expect_request(mark).details, (Details{{"image", "img"}, {"verb", "mark_read_only"}, {"read_only", "1"}}));
    EXPECT_EQ(expect_request({kImg, "SetLimit", "img", {}}).details, (Details{{"machine", "img"}, {"verb", "set_limit"}}));
    auto pool = expect_request({kMgr, "SetPoolLimit", "", {}});
    EXPECT_EQ(pool.action, kPolkitManageMachines);
    EXPECT_EQ(pool.details, (Details{{"verb", "set_pool_limit"}}));
    EXPECT_EQ(expect_request({kMgr, "CleanPool", "", {"all"}}).details, (Details{{"verb", "clean_pool"}, {"mode", "all"}}));
}

TEST(PolkitRequest, TransfersUseImportdsActionsWithoutDetails) {
    const std::string m = "org.freedesktop.import1.Manager";
    for (const char* member : {"ImportTar", "ImportRaw", "ImportFileSystem"})
        EXPECT_EQ(expect_request({m, member, "", {}}).action, kPolkitImport) << member;
    for (const char* member : {"ExportTar", "ExportRaw"})
        EXPECT_EQ(expect_request({m, member, "", {}}).action, kPolkitExport);
    for (const char* member : {"PullTar", "PullRaw", "CancelTransfer"})
        EXPECT_EQ(expect_request({m, member, "", {"https://x/y"}}).action, kPolkitPull) << member;
    auto cancel = expect_request({"org.freedesktop.import1.Transfer", "Cancel", "", {}});
    EXPECT_EQ(cancel.action, kPolkitPull);
    EXPECT_TRUE(cancel.details.empty());
}

TEST(PolkitRequest, ReadOnlyAndRootOnlyMethodsAreNotGated) {
    for (const char* member : {"GetMachine", "ListMachines", "ListImages", "GetMachineOSRelease", "GetMachineAddresses",
                               "CreateMachine", "RegisterMachine", "MapToMachineUser", "GetImageHostname"})
        EXPECT_FALSE(polkit_request_for({kMgr, member, "", {"web"}})) << member;
    EXPECT_FALSE(polkit_request_for({kMach, "GetOSRelease", "web", {}}));
    EXPECT_FALSE(polkit_request_for({"org.freedesktop.import1.Manager", "ListTransfers", "", {}}));
    EXPECT_FALSE(polkit_request_for({"io.machkit.Manager1", "StartMachine", "", {"web"}}));
    EXPECT_FALSE(polkit_request_for({"org.freedesktop.DBus.Properties", "Get", "", {kMgr, "PoolPath"}}));
}

}  // namespace
}  // namespace mk::bus
