// The parsers of untrusted OCI documents (core/image/oci_manifest): references, registries.d,
// manifests and indexes of both media-type families, configs, WWW-Authenticate, and the .nspawn
// text the config turns into (read back through the real settings word splitter).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/image/oci_manifest.hpp"
#include "core/spawn/option_values.hpp"

using namespace mk::core;

namespace {

const std::string kDigest = "sha256:" + std::string(64, 'a');

std::string manifest_json(const std::string& layer_type, size_t layers = 1) {
    std::string l;
    for (size_t i = 0; i < layers; i++)
        l += std::string(i ? "," : "") + R"({"mediaType":")" + layer_type + R"(","digest":")" + kDigest + R"(","size":10})";
    return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
           kDigest + R"(","size":5},"layers":[)" + l + "]}";
}

}  // namespace

TEST(OciReference, DefaultsAndShortNames) {
    auto cfg = default_oci_registry_config();
    auto r = parse_oci_reference("busybox", cfg);
    EXPECT_EQ(r.registry, "docker.io");
    EXPECT_EQ(r.repository, "library/busybox");
    EXPECT_EQ(r.tag, "latest");
    EXPECT_EQ(cfg.lookup(r.registry).endpoint, "registry-1.docker.io");
    EXPECT_FALSE(cfg.lookup(r.registry).insecure);

    r = parse_oci_reference("127.0.0.1:5000/team/app:v1.2", cfg);
    EXPECT_EQ(r.registry, "127.0.0.1:5000");
    EXPECT_EQ(r.repository, "team/app");
    EXPECT_EQ(r.tag, "v1.2");
    EXPECT_TRUE(cfg.lookup(r.registry).insecure);  // loopback: plain HTTP
    EXPECT_FALSE(cfg.lookup("quay.io").insecure);

    r = parse_oci_reference("localhost/app@" + kDigest, cfg);
    EXPECT_EQ(r.registry, "localhost");
    EXPECT_EQ(r.tag, "");
    EXPECT_EQ(r.manifest_ref(), kDigest);
    EXPECT_EQ(r.str(), "localhost/app@" + kDigest);

    r = parse_oci_reference("user/app", cfg);  // two components: no library/ prefix
    EXPECT_EQ(r.repository, "user/app");
}

TEST(OciReference, Rejects) {
    auto cfg = default_oci_registry_config();
    for (const std::string& bad : std::vector<std::string>{
             "", "UPPER/app", "app:", "app:-x", "app@sha256:abc", "app@md5:" + std::string(32, 'a'), "reg.io/../x",
             "reg.io//x", "a/b/", "app:tag with space", std::string(2000, 'a'), "-app", "reg.io/app\n"})
        EXPECT_THROW(parse_oci_reference(bad, cfg), UsageError) << bad;
}

TEST(OciRegistries, FileParsing) {
    auto cfg = default_oci_registry_config();
    parse_oci_registries_file(R"(# local mirror
[Defaults]
Registry=registry.example
[Registry]
Name=docker.io
Endpoint=mirror.local:5000
ShortNamePrefix=library/
Insecure=yes
[Registry]
Name=registry.example
ShortNamePrefix=base/
)",
                              "t.conf", cfg);
    auto d = cfg.lookup("docker.io");
    EXPECT_EQ(d.endpoint, "mirror.local:5000");
    EXPECT_TRUE(d.insecure);
    auto r = parse_oci_reference("app", cfg);
    EXPECT_EQ(r.registry, "registry.example");
    EXPECT_EQ(r.repository, "base/app");
    EXPECT_EQ(cfg.lookup("registry.example").endpoint, "registry.example");

    for (const char* bad : {"[Registry]\nEndpoint=x\n", "[Registry]\nName=a b\n", "[Registry]\nName=x\nInsecure=maybe\n",
                            "[Registry]\nName=x\nTypo=1\n", "Name=x\n", "[Other]\n", "[Registry\n",
                            "[Registry]\nName=x\nShortNamePrefix=library\n", "[Defaults]\nRegistry=\n"}) {
        OciRegistryConfig c;
        EXPECT_THROW(parse_oci_registries_file(bad, "bad.conf", c), UsageError) << bad;
    }
}

TEST(OciManifest, KindsAndLayers) {
    EXPECT_EQ(oci_doc_kind("application/vnd.oci.image.index.v1+json", "{}"), OciDocKind::index);
    EXPECT_EQ(oci_doc_kind("application/vnd.docker.distribution.manifest.list.v2+json", "{}"), OciDocKind::index);
    EXPECT_EQ(oci_doc_kind("application/vnd.docker.distribution.manifest.v2+json; charset=x", "{}"), OciDocKind::manifest);
    EXPECT_EQ(oci_doc_kind("", manifest_json("application/vnd.oci.image.layer.v1.tar")), OciDocKind::manifest);
    EXPECT_THROW(oci_doc_kind("application/vnd.docker.distribution.manifest.v1+prettyjws", "{}"), UsageError);
    EXPECT_THROW(oci_doc_kind("text/html", "<html>"), UsageError);

    for (const char* t :
         {"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
          "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip"}) {
        auto m = parse_oci_manifest(manifest_json(t, 3));
        EXPECT_EQ(m.layers.size(), 3u);
        EXPECT_EQ(m.config.size, 5u);
    }
    EXPECT_THROW(parse_oci_manifest(manifest_json("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")),
                 UsageError);
    EXPECT_THROW(parse_oci_manifest(manifest_json("application/x-evil")), UsageError);
    // 10,000 layers: over the 4096 limit, refused before anything is fetched.
    try {
        parse_oci_manifest(manifest_json("application/vnd.oci.image.layer.v1.tar", 10000));
        FAIL();
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("10000 layers"), std::string::npos) << e.what();
    }
    EXPECT_THROW(parse_oci_manifest(R"({"schemaVersion":1})"), UsageError);
    EXPECT_THROW(parse_oci_manifest("[]"), UsageError);
    EXPECT_THROW(parse_oci_manifest(std::string(kOciManifestMax + 1, ' ')), UsageError);
    std::string neg = manifest_json("application/vnd.oci.image.layer.v1.tar");
    neg.replace(neg.find("\"size\":10"), 9, "\"size\":-1");
    EXPECT_THROW(parse_oci_manifest(neg), UsageError);
}

TEST(OciIndex, PlatformChoice) {
    auto idx = parse_oci_index(R"({"schemaVersion":2,"manifests":[
      {"mediaType":"m","digest":")" +
                               kDigest + R"(","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
      {"mediaType":"m","digest":")" +
                               kDigest + R"(","size":2,"platform":{"architecture":"amd64","os":"linux"}},
      {"mediaType":"m","digest":")" +
                               kDigest + R"(","size":3,"platform":{"architecture":"unknown","os":"unknown"}}]})");
    ASSERT_EQ(idx.size(), 3u);
    auto p = oci_choose_platform(idx, "amd64", "linux", nullptr);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->size, 2u);
    std::string avail;
    EXPECT_FALSE(oci_choose_platform(idx, "s390x", "linux", &avail));
    EXPECT_EQ(avail, "linux/arm64/v8, linux/amd64");
    EXPECT_THROW(parse_oci_index(R"({"manifests":[{"digest":"sha256:zz","size":1}]})"), UsageError);
    EXPECT_NE(oci_host_architecture(), "unknown");
}

TEST(OciConfig, NspawnSettingsRoundTrip) {
    auto c = parse_oci_image_config(R"({"architecture":"amd64","os":"linux","config":{
        "Entrypoint":["/bin/sh","-c"],"Cmd":["echo \"a b\" \\ $X\nnext"],"Env":["A=1","B=with space","=bad","noeq"],
        "User":"app:grp","WorkingDir":"/srv","StopSignal":"SIGQUIT","ExposedPorts":{"80/tcp":{}}}})");
    EXPECT_EQ(c.architecture, "amd64");
    ASSERT_EQ(c.ignored.size(), 1u);
    std::string s = oci_nspawn_settings(c);
    EXPECT_NE(s.find("[Exec]\nBoot=no\n"), std::string::npos);
    EXPECT_NE(s.find("User=app\n"), std::string::npos);
    EXPECT_NE(s.find("WorkingDirectory=/srv\n"), std::string::npos);
    EXPECT_NE(s.find("KillSignal=SIGQUIT\n"), std::string::npos);
    EXPECT_EQ(s.find("=bad"), std::string::npos);
    EXPECT_EQ(s.find("noeq"), std::string::npos);
    // Parameters= reads back, through the settings parser's word splitter, as the exact argv.
    size_t p = s.find("Parameters=");
    ASSERT_NE(p, std::string::npos);
    std::string line = s.substr(p + 11, s.find('\n', p) - p - 11);
    auto words = split_words(line);
    ASSERT_EQ(words.size(), 3u);
    EXPECT_EQ(words[0], "/bin/sh");
    EXPECT_EQ(words[2], "echo \"a b\" \\ $X\nnext");
    // Every line is one line: nothing from the config can start a new key or section.
    for (size_t i = 0, n; i < s.size(); i = n + 1) {
        n = s.find('\n', i);
        std::string l = s.substr(i, n - i);
        EXPECT_TRUE(l.empty() || l[0] == '#' || l[0] == '[' || l.find('=') != std::string::npos) << l;
    }
    auto relative = parse_oci_image_config(R"({"config":{"WorkingDir":"srv","StopSignal":"9"}})");
    std::string r = oci_nspawn_settings(relative);
    EXPECT_EQ(r.find("WorkingDirectory"), std::string::npos);
    EXPECT_EQ(r.find("KillSignal"), std::string::npos);
    EXPECT_THROW(parse_oci_image_config(R"({"config":{"Cmd":"not a list"}})"), UsageError);
}

TEST(OciConfig, AnInitCommandBoots) {
    // A command that is an init boots the image; its other words are the init's arguments.
    auto c = parse_oci_image_config(R"({"config":{"Cmd":["/lib/systemd/systemd","--log-level=info"],
        "StopSignal":"SIGRTMIN+3"}})");
    std::string s = oci_nspawn_settings(c);
    EXPECT_NE(s.find("[Exec]\nBoot=yes\n"), std::string::npos) << s;
    EXPECT_NE(s.find("Parameters=\"--log-level=info\"\n"), std::string::npos) << s;
    EXPECT_NE(s.find("KillSignal=SIGRTMIN+3\n"), std::string::npos) << s;
    std::string bare = oci_nspawn_settings(parse_oci_image_config(R"({"config":{"Entrypoint":["/sbin/init"]}})"));
    EXPECT_NE(bare.find("Boot=yes\n"), std::string::npos);
    EXPECT_EQ(bare.find("Parameters="), std::string::npos);
    // Only the first word counts, and only an init's path.
    for (auto cfg : {R"({"config":{"Cmd":["/bin/sh","/sbin/init"]}})", R"({"config":{"Cmd":["init"]}})",
                     R"({"config":{"Cmd":["/sbin/init.sh"]}})", R"({"config":{}})"})
        EXPECT_NE(oci_nspawn_settings(parse_oci_image_config(cfg)).find("Boot=no\n"), std::string::npos) << cfg;
}

TEST(OciAuth, WwwAuthenticate) {
    auto c = parse_www_authenticate(
        R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull")");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->realm, "https://auth.example/token");
    EXPECT_EQ(c->service, "registry.example");
    EXPECT_EQ(c->scope, "repository:a/b:pull");
    EXPECT_TRUE(parse_www_authenticate(R"(bearer realm="http://127.0.0.1:1/t")"));
    EXPECT_FALSE(parse_www_authenticate(R"(Basic realm="x")"));
    EXPECT_FALSE(parse_www_authenticate(R"(Bearer realm="file:///etc/passwd")"));
    EXPECT_FALSE(parse_www_authenticate(R"(Bearer realm="https://x/unterminated)"));
    EXPECT_FALSE(parse_www_authenticate("Bearer service=\"x\""));
    EXPECT_FALSE(parse_www_authenticate("Bearer realm=\"https://x/\r\nInjected: 1\""));
    EXPECT_EQ(parse_oci_token_reply(R"({"token":"abc"})"), "abc");
    EXPECT_EQ(parse_oci_token_reply(R"({"access_token":"def"})"), "def");
    EXPECT_THROW(parse_oci_token_reply(R"({"token":"a\r\nb"})"), UsageError);
    EXPECT_THROW(parse_oci_token_reply("{}"), UsageError);
}
