#include "core/image/compress.hpp"

#include <bzlib.h>
#include <lzma.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/string_table.hpp"

namespace mk::core {

namespace {

constexpr size_t kBufSize = 1 << 20;

[[noreturn]] void corrupt(std::string_view fmt, std::string_view what) {
    throw_errno(EBADMSG, std::string(fmt) + ": " + std::string(what));
}
[[noreturn]] void truncated(std::string_view fmt) {
    throw_errno(EBADMSG, std::string(fmt) + ": unexpected end of compressed data (truncated)");
}

// Fills `buf` from `in` as far as possible; returns bytes read (short only at EOF).
size_t read_full(ByteSource& in, char* buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        size_t r = in.read(buf + got, n - got);
        if (r == 0) break;
        got += r;
    }
    return got;
}

// Base for decoders: keeps the input buffer and the output cap.
class DecoderBase : public ByteSource {
protected:
    DecoderBase(std::unique_ptr<ByteSource> in, const DecompressOptions& o)
        : in_(std::move(in)), inbuf_(kBufSize), max_(o.max_output) {}
    // Refills the input buffer; false at EOF.
    bool refill() {
        in_len_ = in_->read(inbuf_.data(), inbuf_.size());
        if (in_len_ == 0) in_eof_ = true;
        return in_len_ > 0;
    }
    void account(size_t produced, std::string_view fmt) {
        out_total_ += produced;
        if (out_total_ > max_)
            throw_errno(EFBIG,
                        std::string(fmt) + ": decompressed data exceeds the limit of " + std::to_string(max_) + " bytes");
    }
    std::unique_ptr<ByteSource> in_;
    std::vector<char> inbuf_;
    size_t in_len_ = 0;
    bool in_eof_ = false;
    uint64_t out_total_ = 0;
    uint64_t max_;
};

class XzDecoder final : public DecoderBase {
public:
    XzDecoder(std::unique_ptr<ByteSource> in, const DecompressOptions& o) : DecoderBase(std::move(in), o) {
        lzma_mt mt{};
        mt.flags = LZMA_CONCATENATED;
        mt.threads = o.threads ? o.threads : default_threads();
        // Multi-threaded decoding needs memory per thread; allow a quarter of RAM, then fall back
        // to single-threaded decoding rather than failing (memlimit_stop unlimited).
        struct sysinfo si {};
        uint64_t ram = sysinfo(&si) == 0 ? uint64_t{si.totalram} * si.mem_unit : (uint64_t{1} << 30);
        mt.memlimit_threading = ram / 4;
        mt.memlimit_stop = UINT64_MAX;
        if (lzma_stream_decoder_mt(&s_, &mt) != LZMA_OK) throw_errno(ENOMEM, "xz: cannot set up the decoder");
    }
    ~XzDecoder() override { lzma_end(&s_); }
    size_t read(void* buf, size_t n) override {
        if (done_ || n == 0) return 0;
        s_.next_out = static_cast<uint8_t*>(buf);
        s_.avail_out = n;
        while (s_.avail_out == n) {
            if (s_.avail_in == 0 && !in_eof_) {
                refill();
                s_.next_in = reinterpret_cast<const uint8_t*>(inbuf_.data());
                s_.avail_in = in_len_;
            }
            lzma_ret r = lzma_code(&s_, in_eof_ ? LZMA_FINISH : LZMA_RUN);
            if (r == LZMA_STREAM_END) {
                done_ = true;
                break;
            }
            if (r == LZMA_OK) continue;
            if (r == LZMA_BUF_ERROR) truncated("xz");
            switch (r) {
            case LZMA_FORMAT_ERROR: corrupt("xz", "not in .xz format");
            case LZMA_OPTIONS_ERROR: corrupt("xz", "unsupported options (filter or check)");
            case LZMA_DATA_ERROR: corrupt("xz", "compressed data is corrupt");
            case LZMA_MEM_ERROR: throw_errno(ENOMEM, "xz: out of memory");
            default: corrupt("xz", "decoder error " + std::to_string(int(r)));
            }
        }
        size_t produced = n - s_.avail_out;
        account(produced, "xz");
        return produced;
    }

private:
    lzma_stream s_ = LZMA_STREAM_INIT;
    bool done_ = false;
};

class ZstdDecoder final : public DecoderBase {
public:
    ZstdDecoder(std::unique_ptr<ByteSource> in, const DecompressOptions& o) : DecoderBase(std::move(in), o) {
        d_ = ZSTD_createDCtx();
        if (!d_) throw_errno(ENOMEM, "zstd: cannot set up the decoder");
        // Refuse frames needing more than 1 GiB window (zstd --long=30); defends against memory bombs.
        ZSTD_DCtx_setParameter(d_, ZSTD_d_windowLogMax, 30);
    }
    ~ZstdDecoder() override { ZSTD_freeDCtx(d_); }
    size_t read(void* buf, size_t n) override {
        ZSTD_outBuffer out{buf, n, 0};
        while (out.pos == 0) {
            if (in_.pos == in_.size && !in_eof_ && refill()) in_ = ZSTD_inBuffer{inbuf_.data(), in_len_, 0};
            if (in_.pos == in_.size && in_eof_) {
                // Input is over: flush what the decoder still holds; if a frame is unfinished
                // and nothing more comes out, the stream was cut short.
                if (last_ != 0) {
                    size_t r = ZSTD_decompressStream(d_, &out, &in_);
                    if (ZSTD_isError(r)) corrupt("zstd", ZSTD_getErrorName(r));
                    last_ = r;
                    if (out.pos) break;
                    truncated("zstd");
                }
                if (!seen_frame_) truncated("zstd");
                return 0;
            }
            size_t r = ZSTD_decompressStream(d_, &out, &in_);
            if (ZSTD_isError(r)) corrupt("zstd", ZSTD_getErrorName(r));
            last_ = r;
            seen_frame_ = true;
        }
        account(out.pos, "zstd");
        return out.pos;
    }

private:
    ZSTD_DCtx* d_ = nullptr;
    ZSTD_inBuffer in_{nullptr, 0, 0};
    size_t last_ = 0;
    bool seen_frame_ = false;
};

class GzipDecoder final : public DecoderBase {
public:
    GzipDecoder(std::unique_ptr<ByteSource> in, const DecompressOptions& o) : DecoderBase(std::move(in), o) {
        if (inflateInit2(&z_, 15 + 16) != Z_OK) throw_errno(ENOMEM, "gzip: cannot set up the decoder");
    }
    ~GzipDecoder() override { inflateEnd(&z_); }
    size_t read(void* buf, size_t n) override {
        z_.next_out = static_cast<Bytef*>(buf);
        z_.avail_out = static_cast<uInt>(std::min<size_t>(n, UINT32_MAX));
        size_t want = z_.avail_out;
        while (z_.avail_out == want) {
            if (z_.avail_in == 0) {
                if (in_eof_ || !refill()) {
                    if (in_member_) truncated("gzip");
                    break;
                }
                z_.next_in = reinterpret_cast<Bytef*>(inbuf_.data());
                z_.avail_in = static_cast<uInt>(in_len_);
            }
            in_member_ = true;
            int r = inflate(&z_, Z_NO_FLUSH);
            if (r == Z_STREAM_END) {
                // Another gzip member may follow (concatenated files, pigz); decode it too.
                in_member_ = false;
                inflateReset(&z_);
                continue;
            }
            if (r == Z_OK) continue;
            if (r == Z_BUF_ERROR) continue;  // needs more input: loop refills or reports truncation
            if (r == Z_MEM_ERROR) throw_errno(ENOMEM, "gzip: out of memory");
            // zlib's own text names the symptom ("invalid distance too far back", ...), which
            // depends on where the damage is: say what it means first.
            corrupt("gzip",
                    z_.msg ? std::string("compressed data is corrupt (") + z_.msg + ")" : "compressed data is corrupt");
        }
        size_t produced = want - z_.avail_out;
        account(produced, "gzip");
        return produced;
    }

private:
    z_stream z_{};
    bool in_member_ = false;
};

class Bzip2Decoder final : public DecoderBase {
public:
    Bzip2Decoder(std::unique_ptr<ByteSource> in, const DecompressOptions& o) : DecoderBase(std::move(in), o) {
        if (BZ2_bzDecompressInit(&b_, 0, 0) != BZ_OK) throw_errno(ENOMEM, "bzip2: cannot set up the decoder");
    }
    ~Bzip2Decoder() override { BZ2_bzDecompressEnd(&b_); }
    size_t read(void* buf, size_t n) override {
        b_.next_out = static_cast<char*>(buf);
        b_.avail_out = static_cast<unsigned>(std::min<size_t>(n, UINT32_MAX));
        size_t want = b_.avail_out;
        while (b_.avail_out == want) {
            if (b_.avail_in == 0) {
                if (in_eof_ || !refill()) {
                    if (in_member_) truncated("bzip2");
                    break;
                }
                b_.next_in = inbuf_.data();
                b_.avail_in = static_cast<unsigned>(in_len_);
            }
            in_member_ = true;
            int r = BZ2_bzDecompress(&b_);
            if (r == BZ_STREAM_END) {
                in_member_ = false;
                char* ni = b_.next_in;
                unsigned ai = b_.avail_in;
                BZ2_bzDecompressEnd(&b_);
                if (BZ2_bzDecompressInit(&b_, 0, 0) != BZ_OK) throw_errno(ENOMEM, "bzip2: cannot set up the decoder");
                b_.next_in = ni;
                b_.avail_in = ai;
                b_.next_out = static_cast<char*>(buf) + (want - b_.avail_out);
                continue;
            }
            if (r == BZ_OK) continue;
            if (r == BZ_MEM_ERROR) throw_errno(ENOMEM, "bzip2: out of memory");
            corrupt("bzip2", "compressed data is corrupt");
        }
        size_t produced = want - b_.avail_out;
        account(produced, "bzip2");
        return produced;
    }

private:
    bz_stream b_{};
    bool in_member_ = false;
};

// Uncompressed input still gets the size cap.
class PlainSource final : public DecoderBase {
public:
    PlainSource(std::unique_ptr<ByteSource> in, const DecompressOptions& o) : DecoderBase(std::move(in), o) {}
    size_t read(void* buf, size_t n) override {
        size_t r = in_->read(buf, n);
        account(r, "input");
        return r;
    }
};

// Encoders buffer output and push it to the inner sink in kBufSize pieces.
class EncoderBase : public ByteSink {
protected:
    explicit EncoderBase(std::unique_ptr<ByteSink> out) : out_(std::move(out)), outbuf_(kBufSize) {}
    std::unique_ptr<ByteSink> out_;
    std::vector<char> outbuf_;
};

class XzEncoder final : public EncoderBase {
public:
    XzEncoder(std::unique_ptr<ByteSink> out, const CompressOptions& o) : EncoderBase(std::move(out)) {
        lzma_mt mt{};
        mt.threads = o.threads ? o.threads : default_threads();
        mt.preset = o.level < 0 ? 6 : static_cast<uint32_t>(o.level);
        // block_size 0 = 3 x dictionary (24 MiB at -6), as xz -T does: the output is multi-block
        // for anything bigger than that, so multi-threaded decoders can split it.
        mt.block_size = 0;
        mt.check = LZMA_CHECK_CRC64;
        if (lzma_stream_encoder_mt(&s_, &mt) != LZMA_OK) throw_errno(EINVAL, "xz: cannot set up the encoder");
    }
    ~XzEncoder() override { lzma_end(&s_); }
    void write(const void* buf, size_t n) override {
        s_.next_in = static_cast<const uint8_t*>(buf);
        s_.avail_in = n;
        while (s_.avail_in > 0) run(LZMA_RUN);
    }
    void finish() override {
        while (run(LZMA_FINISH) != LZMA_STREAM_END) {
        }
        out_->finish();
    }

private:
    lzma_ret run(lzma_action a) {
        s_.next_out = reinterpret_cast<uint8_t*>(outbuf_.data());
        s_.avail_out = outbuf_.size();
        lzma_ret r = lzma_code(&s_, a);
        if (r != LZMA_OK && r != LZMA_STREAM_END) throw_errno(EIO, "xz: encoder error " + std::to_string(int(r)));
        size_t have = outbuf_.size() - s_.avail_out;
        if (have) out_->write(outbuf_.data(), have);
        return r;
    }
    lzma_stream s_ = LZMA_STREAM_INIT;
};

class ZstdEncoder final : public EncoderBase {
public:
    ZstdEncoder(std::unique_ptr<ByteSink> out, const CompressOptions& o) : EncoderBase(std::move(out)) {
        c_ = ZSTD_createCCtx();
        if (!c_) throw_errno(ENOMEM, "zstd: cannot set up the encoder");
        ZSTD_CCtx_setParameter(c_, ZSTD_c_compressionLevel, o.level < 0 ? 3 : o.level);
        ZSTD_CCtx_setParameter(c_, ZSTD_c_checksumFlag, 1);
        unsigned t = o.threads ? o.threads : default_threads();
        if (t > 1) ZSTD_CCtx_setParameter(c_, ZSTD_c_nbWorkers, static_cast<int>(t));
    }
    ~ZstdEncoder() override { ZSTD_freeCCtx(c_); }
    void write(const void* buf, size_t n) override {
        ZSTD_inBuffer in{buf, n, 0};
        while (in.pos < in.size) run(&in, ZSTD_e_continue);
    }
    void finish() override {
        ZSTD_inBuffer in{nullptr, 0, 0};
        while (run(&in, ZSTD_e_end) != 0) {
        }
        out_->finish();
    }

private:
    size_t run(ZSTD_inBuffer* in, ZSTD_EndDirective d) {
        ZSTD_outBuffer out{outbuf_.data(), outbuf_.size(), 0};
        size_t r = ZSTD_compressStream2(c_, &out, in, d);
        if (ZSTD_isError(r)) throw_errno(EIO, std::string("zstd: ") + ZSTD_getErrorName(r));
        if (out.pos) out_->write(outbuf_.data(), out.pos);
        return r;
    }
    ZSTD_CCtx* c_ = nullptr;
};

class GzipEncoder final : public EncoderBase {
public:
    GzipEncoder(std::unique_ptr<ByteSink> out, const CompressOptions& o) : EncoderBase(std::move(out)) {
        if (deflateInit2(&z_, o.level < 0 ? 6 : o.level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            throw_errno(EINVAL, "gzip: cannot set up the encoder");
    }
    ~GzipEncoder() override { deflateEnd(&z_); }
    void write(const void* buf, size_t n) override {
        z_.next_in = static_cast<Bytef*>(const_cast<void*>(buf));
        z_.avail_in = static_cast<uInt>(n);
        while (z_.avail_in > 0) run(Z_NO_FLUSH);
    }
    void finish() override {
        while (run(Z_FINISH) != Z_STREAM_END) {
        }
        out_->finish();
    }

private:
    int run(int flush) {
        z_.next_out = reinterpret_cast<Bytef*>(outbuf_.data());
        z_.avail_out = static_cast<uInt>(outbuf_.size());
        int r = deflate(&z_, flush);
        if (r == Z_STREAM_ERROR) throw_errno(EIO, "gzip: encoder error");
        size_t have = outbuf_.size() - z_.avail_out;
        if (have) out_->write(outbuf_.data(), have);
        return r;
    }
    z_stream z_{};
};

class Bzip2Encoder final : public EncoderBase {
public:
    Bzip2Encoder(std::unique_ptr<ByteSink> out, const CompressOptions& o) : EncoderBase(std::move(out)) {
        if (BZ2_bzCompressInit(&b_, o.level < 1 ? 9 : std::min(o.level, 9), 0, 0) != BZ_OK)
            throw_errno(EINVAL, "bzip2: cannot set up the encoder");
    }
    ~Bzip2Encoder() override { BZ2_bzCompressEnd(&b_); }
    void write(const void* buf, size_t n) override {
        b_.next_in = static_cast<char*>(const_cast<void*>(buf));
        b_.avail_in = static_cast<unsigned>(n);
        while (b_.avail_in > 0) run(BZ_RUN);
    }
    void finish() override {
        while (run(BZ_FINISH) != BZ_STREAM_END) {
        }
        out_->finish();
    }

private:
    int run(int action) {
        b_.next_out = outbuf_.data();
        b_.avail_out = static_cast<unsigned>(outbuf_.size());
        int r = BZ2_bzCompress(&b_, action);
        if (r < 0) throw_errno(EIO, "bzip2: encoder error " + std::to_string(r));
        size_t have = outbuf_.size() - b_.avail_out;
        if (have) out_->write(outbuf_.data(), have);
        return r;
    }
    bz_stream b_{};
};

class PlainSink final : public ByteSink {
public:
    explicit PlainSink(std::unique_ptr<ByteSink> out) : out_(std::move(out)) {}
    void write(const void* buf, size_t n) override { out_->write(buf, n); }
    void finish() override { out_->finish(); }

private:
    std::unique_ptr<ByteSink> out_;
};

// Shared between ThreadedSource and its producer thread, which keeps it alive if detached.
struct ThreadState {
    std::unique_ptr<ByteSource> inner;
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::string> q;
    bool eof = false;
    bool stop = false;
    bool finished = false;
    std::exception_ptr err;
};

class ThreadedSource final : public ByteSource {
public:
    ThreadedSource(std::unique_ptr<ByteSource> inner, const std::atomic<bool>* cancel)
        : st_(std::make_shared<ThreadState>()), cancel_(cancel) {
        st_->inner = std::move(inner);
        thread_ = std::thread([st = st_] { produce(*st); });
    }
    ~ThreadedSource() override {
        bool finished;
        {
            std::lock_guard lk(st_->m);
            st_->stop = true;
            finished = st_->finished;
        }
        st_->cv.notify_all();
        // A producer blocked in read() on a pipe cannot be woken; it owns the state and ends on
        // its own when the read returns, so it may be left running rather than hang the caller.
        if (finished || !thread_.joinable()) {
            if (thread_.joinable()) thread_.join();
        } else {
            std::unique_lock lk(st_->m);
            if (st_->cv.wait_for(lk, std::chrono::milliseconds(200), [&] { return st_->finished; })) {
                lk.unlock();
                thread_.join();
            } else {
                lk.unlock();
                thread_.detach();
            }
        }
    }
    size_t read(void* buf, size_t n) override {
        while (cur_pos_ == cur_.size()) {
            std::unique_lock lk(st_->m);
            auto ready = [&] { return !st_->q.empty() || st_->eof || st_->err; };
            while (!st_->cv.wait_for(lk, std::chrono::milliseconds(100), ready))
                if (cancel_ && cancel_->load()) throw_errno(ECANCELED, "transfer cancelled");
            if (!st_->q.empty()) {
                cur_ = std::move(st_->q.front());
                st_->q.pop_front();
                cur_pos_ = 0;
                lk.unlock();
                st_->cv.notify_all();
                continue;
            }
            if (st_->err) std::rethrow_exception(st_->err);
            return 0;
        }
        size_t k = std::min(n, cur_.size() - cur_pos_);
        std::memcpy(buf, cur_.data() + cur_pos_, k);
        cur_pos_ += k;
        return k;
    }

private:
    static void produce(ThreadState& st) {
        try {
            for (;;) {
                std::string chunk(kBufSize, '\0');
                size_t got = read_full(*st.inner, chunk.data(), chunk.size());
                chunk.resize(got);
                std::unique_lock lk(st.m);
                if (got == 0) {
                    st.eof = true;
                    break;
                }
                st.cv.wait(lk, [&] { return st.q.size() < 4 || st.stop; });
                if (st.stop) break;
                st.q.push_back(std::move(chunk));
                lk.unlock();
                st.cv.notify_all();
            }
        } catch (...) {
            std::lock_guard lk(st.m);
            st.err = std::current_exception();
        }
        {
            std::lock_guard lk(st.m);
            st.finished = true;
        }
        st.cv.notify_all();
    }
    std::shared_ptr<ThreadState> st_;
    const std::atomic<bool>* cancel_;
    std::thread thread_;
    std::string cur_;
    size_t cur_pos_ = 0;
};

bool all_zero(const char* p, size_t n) {
    // Word-wise check; blocks are 4 KiB aligned within the buffer.
    const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
    size_t words = n / 8;
    for (size_t i = 0; i < words; i++)
        if (w[i]) return false;
    for (size_t i = words * 8; i < n; i++)
        if (p[i]) return false;
    return true;
}

constexpr std::array<EnumName<Compression>, 5> kCompressionNames{{{Compression::none, "uncompressed"},
                                                                  {Compression::xz, "xz"},
                                                                  {Compression::gzip, "gzip"},
                                                                  {Compression::bzip2, "bzip2"},
                                                                  {Compression::zstd, "zstd"}}};

}  // namespace

std::string_view to_string(Compression c) { return enum_to_string(kCompressionNames, c, "?"); }

std::optional<Compression> compression_from_string(std::string_view s) {
    if (s == "none") return Compression::none;  // an accepted alias, never printed
    return enum_from_string(kCompressionNames, s);
}

Compression compression_from_filename(std::string_view name) {
    auto ends = [&](std::string_view suf) {
        return name.size() >= suf.size() && name.substr(name.size() - suf.size()) == suf;
    };
    if (ends(".xz") || ends(".txz")) return Compression::xz;
    if (ends(".gz") || ends(".tgz")) return Compression::gzip;
    if (ends(".bz2") || ends(".tbz2")) return Compression::bzip2;
    if (ends(".zst") || ends(".tzst")) return Compression::zstd;
    return Compression::none;
}

Compression detect_compression(std::span<const uint8_t> h) {
    auto starts = [&](std::initializer_list<uint8_t> magic) {
        if (h.size() < magic.size()) return false;
        size_t i = 0;
        for (uint8_t b : magic)
            if (h[i++] != b) return false;
        return true;
    };
    if (starts({0xFD, '7', 'z', 'X', 'Z', 0x00})) return Compression::xz;
    if (starts({0x28, 0xB5, 0x2F, 0xFD})) return Compression::zstd;
    if (starts({0x1F, 0x8B})) return Compression::gzip;
    // "BZh" + block size digit 1..9, as import-compress.c checks.
    if (h.size() >= 4 && starts({'B', 'Z', 'h'}) && h[3] >= '1' && h[3] <= '9') return Compression::bzip2;
    return Compression::none;
}

size_t FdSource::read(void* buf, size_t n) {
    ssize_t r = retry_eintr([&] { return ::read(fd_, buf, n); });
    if (r < 0) throw_last_error("read error on input");
    consumed_.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
    return static_cast<size_t>(r);
}

void FdSink::write(const void* buf, size_t n) {
    if (int e = write_all(fd_, {static_cast<const char*>(buf), n}); e < 0)
        throw_errno(-e, e == -ENOSPC ? "disk full while writing output" : "write error on output");
    written_ += n;
}

std::span<const uint8_t> PeekSource::peek(size_t n) {
    while (buf_.size() < n) {
        size_t old = buf_.size();
        buf_.resize(n);
        size_t r = inner_->read(buf_.data() + old, n - old);
        buf_.resize(old + r);
        if (r == 0) break;
    }
    return {reinterpret_cast<const uint8_t*>(buf_.data()), std::min(n, buf_.size())};
}

size_t PeekSource::read(void* buf, size_t n) {
    if (pos_ < buf_.size()) {
        size_t k = std::min(n, buf_.size() - pos_);
        std::memcpy(buf, buf_.data() + pos_, k);
        pos_ += k;
        if (pos_ == buf_.size()) {
            buf_.clear();
            buf_.shrink_to_fit();
            pos_ = 0;
        }
        return k;
    }
    return inner_->read(buf, n);
}

std::unique_ptr<ByteSource> make_decompressor(Compression c, std::unique_ptr<ByteSource> in, const DecompressOptions& opts) {
    switch (c) {
    case Compression::xz: return std::make_unique<XzDecoder>(std::move(in), opts);
    case Compression::zstd: return std::make_unique<ZstdDecoder>(std::move(in), opts);
    case Compression::gzip: return std::make_unique<GzipDecoder>(std::move(in), opts);
    case Compression::bzip2: return std::make_unique<Bzip2Decoder>(std::move(in), opts);
    case Compression::none: break;
    }
    return std::make_unique<PlainSource>(std::move(in), opts);
}

std::unique_ptr<ByteSource> make_auto_decompressor(std::unique_ptr<ByteSource> in, Compression* detected,
                                                   const DecompressOptions& opts) {
    auto peek = std::make_unique<PeekSource>(std::move(in));
    Compression c = detect_compression(peek->peek(6));
    if (detected) *detected = c;
    return make_decompressor(c, std::move(peek), opts);
}

std::unique_ptr<ByteSink> make_compressor(Compression c, std::unique_ptr<ByteSink> out, const CompressOptions& opts) {
    switch (c) {
    case Compression::xz: return std::make_unique<XzEncoder>(std::move(out), opts);
    case Compression::zstd: return std::make_unique<ZstdEncoder>(std::move(out), opts);
    case Compression::gzip: return std::make_unique<GzipEncoder>(std::move(out), opts);
    case Compression::bzip2: return std::make_unique<Bzip2Encoder>(std::move(out), opts);
    case Compression::none: break;
    }
    return std::make_unique<PlainSink>(std::move(out));
}

std::unique_ptr<ByteSource> make_threaded_source(std::unique_ptr<ByteSource> inner, const std::atomic<bool>* cancel) {
    return std::make_unique<ThreadedSource>(std::move(inner), cancel);
}

uint64_t copy_sparse(ByteSource& in, int out_fd) {
    constexpr size_t kBlock = 4096;
    std::vector<char> buf(kBufSize);
    uint64_t off = 0;
    for (;;) {
        size_t got = read_full(in, buf.data(), buf.size());
        if (got == 0) break;
        size_t i = 0;
        while (i < got) {
            size_t len = std::min(kBlock, got - i);
            if (all_zero(buf.data() + i, len)) {
                i += len;
                continue;
            }
            // Gather a run of non-zero blocks and write it in one pwrite.
            size_t j = i + len;
            while (j < got) {
                size_t l2 = std::min(kBlock, got - j);
                if (all_zero(buf.data() + j, l2)) break;
                j += l2;
            }
            if (int e = pwrite_all(out_fd, {buf.data() + i, j - i}, static_cast<off_t>(off + i)); e < 0)
                throw_errno(-e, e == -ENOSPC ? "disk full while writing the image" : "cannot write the image");
            i = j;
        }
        off += got;
    }
    if (::ftruncate(out_fd, static_cast<off_t>(off)) < 0)
        throw_last_error(errno == ENOSPC || errno == EFBIG ? "disk full while sizing the image" : "cannot size the image");
    return off;
}

uint64_t copy_stream(ByteSource& in, ByteSink& out) {
    std::vector<char> buf(kBufSize);
    uint64_t total = 0;
    for (;;) {
        size_t r = in.read(buf.data(), buf.size());
        if (r == 0) break;
        out.write(buf.data(), r);
        total += r;
    }
    return total;
}

unsigned default_threads() {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<unsigned>(std::min<long>(n, 16)) : 1;
}

}  // namespace mk::core
