// Compression for image import and export: detection by magic (never by file name), and streaming
// decoders/encoders for xz (liblzma, multi-threaded both ways), zstd (libzstd, worker threads for
// encoding), gzip (zlib) and bzip2 (libbz2), so decompress -> untar runs without temporary files.
//
// Ownership: every wrapper owns the stream it wraps (unique_ptr chain); FdSource/FdSink do NOT own
// their fd. Sources and sinks are thread-hostile (one user at a time); ThreadedSource moves the
// wrapped source onto its own thread so decoding overlaps with the consumer (like `xz -dc | tar x`).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace mk::core {

enum class Compression { none, xz, gzip, bzip2, zstd };

std::string_view to_string(Compression c);
// "uncompressed" (importd's word) and "none" both mean Compression::none.
std::optional<Compression> compression_from_string(std::string_view s);
// From a file name suffix (.xz, .gz, .bz2, .zst); none when there is no known suffix.
Compression compression_from_filename(std::string_view name);
// From the first bytes of a stream. Fewer bytes than a magic needs simply do not match.
Compression detect_compression(std::span<const uint8_t> head);

// A stream of bytes read in order. read() returns 0 only at the end; errors throw std::system_error.
class ByteSource {
public:
    virtual ~ByteSource() = default;
    virtual size_t read(void* buf, size_t n) = 0;
};

// A stream of bytes written in order. finish() flushes and writes trailers; call it exactly once
// on success (a sink destroyed without finish() leaves an incomplete stream, which is the point
// on error paths).
class ByteSink {
public:
    virtual ~ByteSink() = default;
    virtual void write(const void* buf, size_t n) = 0;
    virtual void finish() {}
};

// Reads an fd (not owned). Counts bytes for progress reporting (readable from any thread).
class FdSource final : public ByteSource {
public:
    explicit FdSource(int fd) : fd_(fd) {}
    size_t read(void* buf, size_t n) override;
    uint64_t consumed() const { return consumed_.load(std::memory_order_relaxed); }
    const std::atomic<uint64_t>& counter() const { return consumed_; }

private:
    int fd_;
    std::atomic<uint64_t> consumed_{0};
};

// Writes an fd (not owned), all of it; ENOSPC and EPIPE surface as std::system_error.
class FdSink final : public ByteSink {
public:
    explicit FdSink(int fd) : fd_(fd) {}
    void write(const void* buf, size_t n) override;
    uint64_t written() const { return written_; }

private:
    int fd_;
    uint64_t written_ = 0;
};

// Lets the first bytes be inspected without consuming them (for magic detection).
class PeekSource final : public ByteSource {
public:
    explicit PeekSource(std::unique_ptr<ByteSource> inner) : inner_(std::move(inner)) {}
    // Up to n bytes from the start of the stream (fewer at EOF). Only before the first read().
    std::span<const uint8_t> peek(size_t n);
    size_t read(void* buf, size_t n) override;

private:
    std::unique_ptr<ByteSource> inner_;
    std::string buf_;
    size_t pos_ = 0;
};

struct DecompressOptions {
    unsigned threads = 0;                      // 0: number of online CPUs (xz only)
    uint64_t max_output = uint64_t{64} << 30;  // decompression-bomb cap (systemd: 64 GiB)
};

struct CompressOptions {
    int level = -1;        // -1: the format's default (xz 6, zstd 3, gzip 6, bzip2 9)
    unsigned threads = 0;  // 0: number of online CPUs (xz, zstd)
};

// Decoded bytes of `in`. Truncated input ("unexpected end of compressed data") and corrupt input
// throw std::system_error(EBADMSG) naming the format; output beyond max_output throws EFBIG.
// Concatenated streams (xz, gzip, zstd frames, bzip2) are decoded as one.
std::unique_ptr<ByteSource> make_decompressor(Compression c, std::unique_ptr<ByteSource> in,
                                              const DecompressOptions& opts = {});

// Peeks at the magic of `in`, stores what it found in *detected, and returns the decoded stream.
std::unique_ptr<ByteSource> make_auto_decompressor(std::unique_ptr<ByteSource> in, Compression* detected,
                                                   const DecompressOptions& opts = {});

// Encodes into `out`. xz: multi-threaded encoder with a block size that makes the output
// multi-block (so decoders can decode in parallel); zstd: ZSTD_c_nbWorkers.
std::unique_ptr<ByteSink> make_compressor(Compression c, std::unique_ptr<ByteSink> out, const CompressOptions& opts = {});

// Runs `inner` on a thread of its own, handing over 1 MiB chunks through a small bounded queue, so
// decoding overlaps with whatever consumes the data. Exceptions from the thread are rethrown by
// read(). Destroying it stops the thread. With `cancel`, read() throws ECANCELED within ~100 ms
// of the flag being set even while the producer is stuck (a client that stops sending).
std::unique_ptr<ByteSource> make_threaded_source(std::unique_ptr<ByteSource> inner,
                                                 const std::atomic<bool>* cancel = nullptr);

// Copies `in` to the regular file `out_fd` from offset 0, seeking over 4 KiB blocks of zeros so
// the result is sparse, then sets the file size. Returns the bytes written (the logical size).
uint64_t copy_sparse(ByteSource& in, int out_fd);

// Copies everything; returns the byte count.
uint64_t copy_stream(ByteSource& in, ByteSink& out);

unsigned default_threads();

}  // namespace mk::core
