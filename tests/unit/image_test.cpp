#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/xattr.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>

#include "core/image/archive.hpp"
#include "core/image/compress.hpp"
#include "core/image/pool.hpp"
#include "core/image/pull.hpp"
#include "core/image/sha256sums.hpp"
#include "core/image/transfer_ops.hpp"

using namespace mk::core;

namespace {

const std::string kHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";  // sha256("")

class StringSource final : public ByteSource {
public:
    explicit StringSource(std::string s) : s_(std::move(s)) {}
    size_t read(void* buf, size_t n) override {
        size_t k = std::min(n, s_.size() - pos_);
        memcpy(buf, s_.data() + pos_, k);
        pos_ += k;
        return k;
    }

private:
    std::string s_;
    size_t pos_ = 0;
};

class StringSink final : public ByteSink {
public:
    explicit StringSink(std::string* s) : s_(s) {}
    void write(const void* b, size_t n) override { s_->append(static_cast<const char*>(b), n); }

private:
    std::string* s_;
};

std::string compress(Compression c, const std::string& data) {
    std::string out;
    auto sink = make_compressor(c, std::make_unique<StringSink>(&out), CompressOptions{-1, 2});
    sink->write(data.data(), data.size());
    sink->finish();
    return out;
}

std::string decompress_all(const std::string& data, Compression* detected = nullptr) {
    Compression c;
    auto src = make_auto_decompressor(std::make_unique<StringSource>(data), &c);
    if (detected) *detected = c;
    std::string out;
    StringSink sink(&out);
    copy_stream(*src, sink);
    return out;
}

std::string sample(size_t n) {
    std::mt19937 rng(42);
    std::string s;
    s.reserve(n);
    // Compressible but not trivial.
    for (size_t i = 0; i < n; i++) s += static_cast<char>('a' + (rng() % 7 == 0 ? rng() % 26 : i % 13));
    return s;
}

}  // namespace

TEST(Sha256Sums, FindsTextAndBinaryLines) {
    std::string t = kHash + "  image.tar.xz\n" + std::string(64, 'a') + " *other.raw\n";
    EXPECT_EQ(sha256sums_lookup(t, "image.tar.xz"), kHash);
    EXPECT_EQ(sha256sums_lookup(t, "other.raw"), std::string(64, 'a'));
}

TEST(Sha256Sums, UppercaseAndCrlf) {
    std::string up = kHash;
    for (char& c : up) c = static_cast<char>(toupper(c));
    EXPECT_EQ(sha256sums_lookup(up + "  x.raw\r\n", "x.raw"), kHash);
}

TEST(Sha256Sums, RejectsWhatT34Rejects) {
    std::string why;
    // Another file's hash only.
    EXPECT_FALSE(sha256sums_lookup(kHash + "  other\n", "x", &why));
    EXPECT_NE(why.find("no entry"), std::string::npos);
    // Hash mid-line.
    EXPECT_FALSE(sha256sums_lookup("foo " + kHash + "  x\n", "x"));
    // BSD style.
    EXPECT_FALSE(sha256sums_lookup("SHA256 (x) = " + kHash + "\n", "x"));
    // Same name twice, different hashes.
    EXPECT_FALSE(sha256sums_lookup(kHash + "  x\n" + std::string(64, 'b') + "  x\n", "x", &why));
    EXPECT_NE(why.find("twice"), std::string::npos);
    // Same name twice, same hash: fine.
    EXPECT_TRUE(sha256sums_lookup(kHash + "  x\n" + kHash + "  x\n", "x"));
    // Over 1 MiB.
    EXPECT_FALSE(sha256sums_lookup(std::string(kSha256SumsMax + 1, '\n'), "x"));
    // Empty file.
    EXPECT_FALSE(sha256sums_lookup("", "x"));
    // A path instead of a name, and a bad name to look up.
    EXPECT_FALSE(sha256sums_lookup(kHash + "  ../x\n", "x"));
    EXPECT_FALSE(sha256sums_lookup(kHash + "  ../x\n", "../x"));
    // Non-hex, short hash, single space.
    EXPECT_FALSE(sha256sums_lookup(std::string(63, 'a') + "g  x\n", "x"));
    EXPECT_FALSE(sha256sums_lookup(std::string(63, 'a') + "  x\n", "x"));
    EXPECT_FALSE(sha256sums_lookup(kHash + " x\n", "x"));
    // Trailing garbage after the name makes it another name.
    EXPECT_FALSE(sha256sums_lookup(kHash + "  x junk\n", "x"));
}

TEST(Sha256, KnownVectors) {
    EXPECT_EQ(sha256_hex(""), kHash);
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Compression, DetectByMagic) {
    auto d = [](std::initializer_list<uint8_t> b) {
        std::vector<uint8_t> v(b);
        return detect_compression(v);
    };
    EXPECT_EQ(d({0xFD, '7', 'z', 'X', 'Z', 0}), Compression::xz);
    EXPECT_EQ(d({0x28, 0xB5, 0x2F, 0xFD}), Compression::zstd);
    EXPECT_EQ(d({0x1F, 0x8B, 8}), Compression::gzip);
    EXPECT_EQ(d({'B', 'Z', 'h', '9'}), Compression::bzip2);
    EXPECT_EQ(d({'B', 'Z', 'h', 'x'}), Compression::none);
    EXPECT_EQ(d({0xFD, '7', 'z'}), Compression::none);
    EXPECT_EQ(d({}), Compression::none);
    EXPECT_EQ(d({'u', 's', 't', 'a', 'r'}), Compression::none);
}

TEST(Compression, StringsAndFileNames) {
    for (auto c : {Compression::none, Compression::xz, Compression::gzip, Compression::bzip2, Compression::zstd})
        EXPECT_EQ(compression_from_string(to_string(c)), c);
    EXPECT_EQ(compression_from_string("none"), Compression::none);
    EXPECT_FALSE(compression_from_string("lz4"));
    EXPECT_EQ(compression_from_filename("a.tar.xz"), Compression::xz);
    EXPECT_EQ(compression_from_filename("a.raw.zst"), Compression::zstd);
    EXPECT_EQ(compression_from_filename("a.tgz"), Compression::gzip);
    EXPECT_EQ(compression_from_filename("a.tar.bz2"), Compression::bzip2);
    EXPECT_EQ(compression_from_filename("a.tar"), Compression::none);
}

TEST(Compression, RoundTripEveryFormat) {
    std::string data = sample(3 << 20);
    for (auto c : {Compression::none, Compression::xz, Compression::gzip, Compression::bzip2, Compression::zstd}) {
        std::string z = compress(c, data);
        Compression got;
        EXPECT_EQ(decompress_all(z, &got), data) << to_string(c);
        EXPECT_EQ(got, c);
        if (c != Compression::none) {
            EXPECT_LT(z.size(), data.size());
        }
    }
}

TEST(Compression, EmptyInputRoundTrips) {
    for (auto c : {Compression::xz, Compression::gzip, Compression::bzip2, Compression::zstd})
        EXPECT_EQ(decompress_all(compress(c, "")), "") << to_string(c);
}

TEST(Compression, ConcatenatedStreams) {
    for (auto c : {Compression::xz, Compression::gzip, Compression::bzip2, Compression::zstd})
        EXPECT_EQ(decompress_all(compress(c, "hello ") + compress(c, "world")), "hello world") << to_string(c);
}

TEST(Compression, TruncatedIsAnError) {
    std::string data = sample(1 << 20);
    for (auto c : {Compression::xz, Compression::gzip, Compression::bzip2, Compression::zstd}) {
        std::string z = compress(c, data);
        for (size_t cut : {z.size() / 2, z.size() - 1}) {
            try {
                decompress_all(z.substr(0, cut));
                ADD_FAILURE() << to_string(c) << " truncated at " << cut << " was accepted";
            } catch (const std::system_error& e) {
                EXPECT_EQ(e.code().value(), EBADMSG) << to_string(c);
            }
        }
    }
}

TEST(Compression, CorruptIsAnError) {
    std::string data = sample(1 << 20);
    for (auto c : {Compression::xz, Compression::gzip, Compression::bzip2, Compression::zstd}) {
        std::string z = compress(c, data);
        z[z.size() / 2] ^= 0x55;
        z[z.size() / 2 + 1] ^= 0x55;
        EXPECT_THROW(decompress_all(z), std::system_error) << to_string(c);
    }
}

TEST(Compression, GarbageAfterStreamIsAnError) {
    for (auto c : {Compression::xz, Compression::gzip, Compression::zstd})
        EXPECT_THROW(decompress_all(compress(c, "data") + "garbage!"), std::system_error) << to_string(c);
}

TEST(Compression, OutputCap) {
    std::string z = compress(Compression::zstd, std::string(1 << 20, '\0'));
    DecompressOptions o;
    o.max_output = 1000;
    auto src = make_decompressor(Compression::zstd, std::make_unique<StringSource>(z), o);
    std::string out;
    StringSink sink(&out);
    try {
        copy_stream(*src, sink);
        FAIL();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EFBIG);
    }
}

TEST(Compression, ThreadedSourcePassesDataAndErrors) {
    std::string data = sample(2 << 20);
    auto t = make_threaded_source(std::make_unique<StringSource>(data));
    std::string out;
    StringSink sink(&out);
    copy_stream(*t, sink);
    EXPECT_EQ(out, data);
    std::string z = compress(Compression::xz, data);
    auto bad =
        make_threaded_source(make_auto_decompressor(std::make_unique<StringSource>(z.substr(0, z.size() / 2)), nullptr));
    out.clear();
    EXPECT_THROW(copy_stream(*bad, sink), std::system_error);
}

TEST(Compression, SparseCopy) {
    char path[] = "/tmp/mk-sparse-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    unlink(path);
    std::string data(8 << 20, '\0');
    data[0] = 'x';
    data[data.size() - 1] = 'y';
    StringSource src(data);
    EXPECT_EQ(copy_sparse(src, fd), data.size());
    struct stat st;
    fstat(fd, &st);
    EXPECT_EQ(static_cast<size_t>(st.st_size), data.size());
    EXPECT_LT(st.st_blocks * 512, 1 << 20);  // holes, not 8 MiB of zeros
    char c;
    pread(fd, &c, 1, static_cast<off_t>(data.size() - 1));
    EXPECT_EQ(c, 'y');
    close(fd);
}

TEST(ArchivePath, Normalises) {
    EXPECT_EQ(normalize_archive_path("./"), "");
    EXPECT_EQ(normalize_archive_path("."), "");
    EXPECT_EQ(normalize_archive_path("./usr/bin/"), "usr/bin");
    EXPECT_EQ(normalize_archive_path("a//b/./c"), "a/b/c");
    EXPECT_EQ(normalize_archive_path("..foo/bar.."), "..foo/bar..");
}

TEST(ArchivePath, RejectsB20) {
    std::string why;
    for (const char* bad : {"../evil", "./../evil", "a/../../evil", "/etc/evil", "//etc/evil", "", "a/..", ".."}) {
        EXPECT_FALSE(normalize_archive_path(bad, {}, &why)) << bad;
        EXPECT_FALSE(why.empty());
    }
    EXPECT_FALSE(normalize_archive_path(std::string("a\0b", 3)));
}

TEST(ArchivePath, Limits) {
    ArchivePathLimits l;
    std::string deep;
    for (size_t i = 0; i < l.max_depth; i++) deep += "d/";
    EXPECT_TRUE(normalize_archive_path(deep, l));
    EXPECT_FALSE(normalize_archive_path(deep + "x", l));
    EXPECT_TRUE(normalize_archive_path(std::string(255, 'n'), l));
    EXPECT_FALSE(normalize_archive_path(std::string(256, 'n'), l));
    EXPECT_FALSE(normalize_archive_path(std::string(4096, 'n'), l));
}

TEST(ArchiveXattr, AllowList) {
    EXPECT_TRUE(archive_xattr_is_restored("user.foo"));
    EXPECT_TRUE(archive_xattr_is_restored("security.capability"));
    EXPECT_TRUE(archive_xattr_is_restored("system.posix_acl_access"));
    EXPECT_TRUE(archive_xattr_is_restored("system.posix_acl_default"));
    EXPECT_FALSE(archive_xattr_is_restored("trusted.overlay.opaque"));
    EXPECT_FALSE(archive_xattr_is_restored("security.selinux"));
    EXPECT_FALSE(archive_xattr_is_restored("system.nfs4_acl"));
}

TEST(Pull, Urls) {
    EXPECT_TRUE(url_is_valid("http://127.0.0.1:8000/x.tar.xz"));
    EXPECT_TRUE(url_is_valid("https://example.com/a/b.raw"));
    for (const char* bad : {"ftp://x/y", "file:///etc/shadow", "http://", "http:///x", "http://a b/", "http://x/\r\nHost: y",
                            "gopher://x", "http://user@/x"})
        EXPECT_FALSE(url_is_valid(bad)) << bad;
    EXPECT_FALSE(url_is_valid("http://x/" + std::string(5000, 'a')));
    EXPECT_EQ(url_last_component("http://h/a/b.tar.xz?x=1#f"), "b.tar.xz");
    EXPECT_EQ(url_last_component("http://h"), "");
    EXPECT_EQ(url_sibling("http://h/a/b.tar.xz?q", "SHA256SUMS"), "http://h/a/SHA256SUMS");
    for (auto m : {VerifyMode::no, VerifyMode::checksum, VerifyMode::signature})
        EXPECT_EQ(verify_mode_from_string(to_string(m)), m);
    EXPECT_FALSE(verify_mode_from_string("yes"));
}

TEST(Transfer, TypeStrings) {
    for (auto t : {TransferType::import_tar, TransferType::import_raw, TransferType::import_fs, TransferType::export_tar,
                   TransferType::export_raw, TransferType::pull_tar, TransferType::pull_raw})
        EXPECT_EQ(transfer_type_from_string(to_string(t)), t);
    for (auto t : {ImageType::directory, ImageType::subvolume, ImageType::raw, ImageType::block})
        EXPECT_EQ(image_type_from_string(to_string(t)), t);
}

// Pool operations on a temp dir work unprivileged (no chown needed).
TEST(Pool, TempInstallRenameCloneRemove) {
    char tmpl[] = "/tmp/mk-pool-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    {
        ImagePool pool(tmpl);
        {
            auto t = pool.make_temp("import-", true);
            int fd = openat(t.fd(), "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            ASSERT_GE(fd, 0);
            ASSERT_EQ(write(fd, "x", 1), 1);
            close(fd);
            ASSERT_EQ(mkdirat(t.fd(), "sub", 0755), 0);
            ASSERT_EQ(symlinkat("/etc/passwd", t.fd(), "sub/l"), 0);
            t.install("one", false, false);
        }
        {
            auto t = pool.make_temp("abandoned-", true);  // destroyed without install: removed
        }
        auto list = pool.list(true);
        ASSERT_EQ(list.size(), 1u);
        EXPECT_EQ(list[0].name, "one");
        EXPECT_EQ(list[0].type, ImageType::directory);
        EXPECT_FALSE(list[0].read_only);
        EXPECT_GT(list[0].usage, 0u);
        EXPECT_THROW(pool.check_free("one"), std::system_error);
        pool.clone("one", "two");
        char buf[4] = {};
        std::string f2 = std::string(tmpl) + "/two/f";
        int fd = open(f2.c_str(), O_RDONLY | O_CLOEXEC);
        ASSERT_GE(fd, 0);
        EXPECT_EQ(read(fd, buf, 4), 1);
        close(fd);
        char lbuf[64] = {};
        EXPECT_GT(readlink((std::string(tmpl) + "/two/sub/l").c_str(), lbuf, sizeof lbuf), 0);
        EXPECT_STREQ(lbuf, "/etc/passwd");
        pool.rename("two", "three");
        EXPECT_FALSE(pool.find("two"));
        EXPECT_TRUE(pool.find("three"));
        EXPECT_THROW(pool.rename("one", "three"), std::system_error);
        EXPECT_THROW(pool.set_pool_limit(1 << 30), std::system_error);
        pool.remove("three");
        pool.remove("one");
        EXPECT_TRUE(pool.list().empty());
        // The symlink pointed at /etc/passwd: removal must not have followed it.
        EXPECT_EQ(access("/etc/passwd", F_OK), 0);
    }
    rmdir(tmpl);
}

namespace {
std::string layer_name(char c) { return ".oci-sha256-" + std::string(64, c); }
void make_stack(int pool_fd, const std::string& name, const std::string& layers) {
    ASSERT_EQ(mkdirat(pool_fd, (name + ".mstack").c_str(), 0755), 0);
    ASSERT_EQ(mkdirat(pool_fd, (name + ".mstack/rw").c_str(), 0755), 0);
    for (size_t i = 0; i < layers.size(); i++) {
        mkdirat(pool_fd, layer_name(layers[i]).c_str(), 0755);
        std::string link = name + ".mstack/layer@" + std::to_string(i);
        ASSERT_EQ(symlinkat(("../" + layer_name(layers[i])).c_str(), pool_fd, link.c_str()), 0);
    }
    for (const char* suf : {".nspawn", ".oci-config"}) {
        int fd = openat(pool_fd, (name + suf).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(write(fd, name.data(), name.size()), static_cast<ssize_t>(name.size()));
        close(fd);
    }
}
bool exists_at(int fd, const std::string& n) { return faccessat(fd, n.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0; }
}  // namespace

// OCI layer stacks in the pool: listed as "mstack" images, cloned/renamed with their settings, and
// removed with the layers no other stack links (never one that another stack still uses).
TEST(Pool, StacksShareLayersAndRemoveOnlyUnusedOnes) {
    char tmpl[] = "/tmp/mk-stacks-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    {
        ImagePool pool(tmpl);
        int fd = pool.fd();
        make_stack(fd, "one", "ab");
        make_stack(fd, "two", "bc");
        mkdirat(fd, layer_name('d').c_str(), 0755);  // linked by nothing (an interrupted pull's)
        auto list = pool.list(true);
        ASSERT_EQ(list.size(), 2u);
        EXPECT_EQ(list[0].name, "one");
        EXPECT_EQ(list[0].type, ImageType::mstack);
        EXPECT_EQ(to_string(ImageType::mstack), "mstack");
        EXPECT_EQ(list[0].path, std::string(tmpl) + "/one.mstack");
        EXPECT_FALSE(list[0].read_only);
        EXPECT_GT(list[0].usage, 0u);
        EXPECT_THROW(pool.check_free("one"), std::system_error);

        pool.set_read_only("one", true);
        EXPECT_TRUE(pool.find("one")->read_only);
        EXPECT_THROW(pool.rename("one", "uno"), std::system_error);  // EROFS
        pool.set_read_only("one", false);

        pool.clone("one", "copy");
        EXPECT_EQ(pool.find("copy")->type, ImageType::mstack);
        EXPECT_TRUE(exists_at(fd, "copy.nspawn") && exists_at(fd, "copy.oci-config"));
        char buf[128] = {};
        ASSERT_GT(readlinkat(fd, "copy.mstack/layer@0", buf, sizeof buf - 1), 0);
        EXPECT_EQ(std::string(buf), "../" + layer_name('a'));

        pool.rename("copy", "renamed");
        EXPECT_TRUE(exists_at(fd, "renamed.mstack") && exists_at(fd, "renamed.nspawn") &&
                    exists_at(fd, "renamed.oci-config"));
        EXPECT_FALSE(exists_at(fd, "copy.mstack") || exists_at(fd, "copy.nspawn"));

        // "one" goes; its layers stay while "renamed" (a, b) and "two" (b, c) link them.
        pool.remove("one");
        EXPECT_FALSE(exists_at(fd, "one.mstack") || exists_at(fd, "one.nspawn") || exists_at(fd, "one.oci-config"));
        for (char c : {'a', 'b', 'c'}) EXPECT_TRUE(exists_at(fd, layer_name(c))) << c;
        EXPECT_FALSE(exists_at(fd, layer_name('d')));  // unused: collected with the removal
        pool.remove("renamed");
        EXPECT_FALSE(exists_at(fd, layer_name('a')));
        EXPECT_TRUE(exists_at(fd, layer_name('b')) && exists_at(fd, layer_name('c')));

        // A transfer holding the layer lock shared keeps unused layers from being collected.
        mkdirat(fd, layer_name('e').c_str(), 0755);
        {
            UniqueFd held = pool.lock_oci_layers(false, true);
            ASSERT_TRUE(held);
            EXPECT_TRUE(pool.remove_unused_oci_layers(false).empty());
            EXPECT_TRUE(exists_at(fd, layer_name('e')));
        }
        auto gone = pool.remove_unused_oci_layers(false);
        ASSERT_EQ(gone.size(), 1u);
        EXPECT_EQ(gone[0].first, layer_name('e'));
        pool.remove("two");
        for (char c : {'b', 'c'}) EXPECT_FALSE(exists_at(fd, layer_name(c))) << c;
    }
    rm_rf_at(AT_FDCWD, tmpl, 0);
}

TEST(Pool, LayerUsageIsComputedOnceAndStored) {
    char tmpl[] = "/tmp/mk-layer-usage-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    {
        ImagePool pool(tmpl);
        int fd = pool.fd();
        make_stack(fd, "one", "a");
        const std::string a = layer_name('a');
        int f = openat(fd, (a + "/file").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ASSERT_GE(f, 0);
        std::string data(64 * 1024, 'x');
        ASSERT_EQ(write(f, data.data(), data.size()), static_cast<ssize_t>(data.size()));
        fsync(f);
        close(f);
        const uint64_t walked = disk_usage_at(fd, a);
        ASSERT_GE(walked, data.size());
        // A layer without a stored usage (unpacked by an older version) is walked once and stored.
        EXPECT_EQ(layer_usage_at(fd, a), walked);
        char v[32] = {};
        UniqueFd dir(openat(fd, a.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        ssize_t n = fgetxattr(dir.get(), kLayerUsageXattr, v, sizeof v - 1);
        if (n < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP)) GTEST_SKIP() << "no user xattrs on /tmp";
        ASSERT_GT(n, 0);
        EXPECT_EQ(std::string(v, static_cast<size_t>(n)), std::to_string(walked));
        // From then on the stored value is what listings use: the layer is not walked again.
        ASSERT_EQ(fsetxattr(dir.get(), kLayerUsageXattr, "7", 1, 0), 0);
        EXPECT_EQ(layer_usage_at(fd, a), 7u);
        uint64_t rw = disk_usage_at(fd, "one.mstack");
        EXPECT_EQ(pool.find("one", true)->usage, rw + 7u);
        // A value that is not a number is not believed.
        ASSERT_EQ(fsetxattr(dir.get(), kLayerUsageXattr, "12x", 3, 0), 0);
        EXPECT_EQ(layer_usage_at(fd, a), walked);
        // store_layer_usage (what a transfer calls once a layer is unpacked) replaces any value.
        ASSERT_EQ(fsetxattr(dir.get(), kLayerUsageXattr, "1", 1, 0), 0);
        EXPECT_EQ(store_layer_usage(dir.get()), walked);
        EXPECT_EQ(layer_usage_at(fd, a), walked);
    }
    rm_rf_at(AT_FDCWD, tmpl, 0);
}

TEST(Pool, RemovesStaleTemporaries) {
    char tmpl[] = "/tmp/mk-stale-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    {
        ImagePool pool(tmpl);
        int fd = pool.fd();
        ASSERT_EQ(mkdirat(fd, ".#import-abc", 0700), 0);
        ASSERT_EQ(mkdirat(fd, ".#import-abc/sub", 0700), 0);
        close(openat(fd, ".#pull-xyz", O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
        ASSERT_EQ(mkdirat(fd, ".#other", 0700), 0);
        ASSERT_EQ(mkdirat(fd, "keep", 0700), 0);
        EXPECT_EQ(pool.remove_stale_temporaries(), 2u);
        EXPECT_EQ(faccessat(fd, ".#other", F_OK, 0), 0);
        EXPECT_EQ(faccessat(fd, "keep", F_OK, 0), 0);
        EXPECT_NE(faccessat(fd, ".#pull-xyz", F_OK, 0), 0);
        unlinkat(fd, ".#other", AT_REMOVEDIR);
        unlinkat(fd, "keep", AT_REMOVEDIR);
    }
    rmdir(tmpl);
}

TEST(Pool, RemovesVeryDeepTreesIteratively) {
    char tmpl[] = "/tmp/mk-deep-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    int fd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_EQ(mkdirat(fd, "t", 0755), 0);
    int cur = openat(fd, "t", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (int i = 0; i < 3000; i++) {
        ASSERT_EQ(mkdirat(cur, "d", 0755), 0);
        int n = openat(cur, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        close(cur);
        cur = n;
    }
    close(cur);
    remove_tree_at(fd, "t");
    EXPECT_NE(faccessat(fd, "t", F_OK, 0), 0);
    close(fd);
    rmdir(tmpl);
}

TEST(Pool, IsPrivateToRoot) {
    char tmpl[] = "/tmp/mk-pool-mode-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string made = std::string(tmpl) + "/new", existing = std::string(tmpl) + "/old";
    mode_t old_umask = umask(0);
    { ImagePool pool(made); }
    ASSERT_EQ(mkdir(existing.c_str(), 0755), 0);
    { ImagePool pool(existing); }
    umask(old_umask);
    struct stat st;
    ASSERT_EQ(stat(made.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    ASSERT_EQ(stat(existing.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    rmdir(made.c_str());
    rmdir(existing.c_str());
    rmdir(tmpl);
}

// Needs a btrfs directory (root: mkfs.btrfs on a loop file, see test_images.py's btrfs_pool);
// skipped unless MK_TEST_BTRFS_DIR names one.
TEST(Pool, BtrfsSnapshotCloneAndRemove) {
    const char* dir = getenv("MK_TEST_BTRFS_DIR");
    if (!dir) GTEST_SKIP() << "MK_TEST_BTRFS_DIR not set";
    ImagePool pool(std::string(dir) + "/pool-unit");
    ASSERT_TRUE(pool.is_btrfs());
    {
        auto t = pool.make_temp("import-", true);
        int fd = openat(t.fd(), "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(write(fd, "x", 1), 1);
        close(fd);
        t.install("base", false, true);
    }
    auto base = pool.find("base");
    ASSERT_TRUE(base);
    EXPECT_EQ(base->type, ImageType::subvolume);
    EXPECT_TRUE(base->read_only);
    pool.clone("base", "snap");
    auto snap = pool.find("snap");
    ASSERT_TRUE(snap);
    EXPECT_EQ(snap->type, ImageType::subvolume);
    EXPECT_FALSE(snap->read_only);
    pool.set_read_only("snap", true);
    EXPECT_TRUE(pool.find("snap")->read_only);
    EXPECT_THROW(pool.set_limit("snap", 1 << 30), std::system_error);
    pool.remove("snap");
    pool.remove("base");
    EXPECT_TRUE(pool.list().empty());
}
