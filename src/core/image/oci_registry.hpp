// The OCI distribution protocol, client side: GET /v2/<repository>/manifests/<ref> and
// /v2/<repository>/blobs/<digest> through libcurl, with Bearer token auth from the registry's
// WWW-Authenticate challenge. Everything a registry says is untrusted and bounded: manifest
// size, redirects (5), one token fetch per 401 (a registry answering 401 forever fails after the
// second), stalls (no byte for `stall_timeout_sec`), blob sizes (the descriptor's size).
//
// Digests are not checked here for blobs (the caller hashes while it consumes the stream);
// manifests fetched by digest are checked by the caller too (it knows which digest it expects).
// Thread-safe: blobs of one image are fetched from several threads at once (the token is shared
// under a mutex).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "core/image/compress.hpp"
#include "core/image/oci_manifest.hpp"

namespace mk::core {

struct OciFetchOptions {
    unsigned stall_timeout_sec = 60;  // abort when no data arrived for this long
    unsigned connect_timeout_sec = 30;
    const std::atomic<bool>* cancel = nullptr;  // the transfer's (SIGTERM)
    const std::atomic<bool>* abort = nullptr;   // set when a sibling download failed
};

class OciRegistryClient {
public:
    OciRegistryClient(OciRegistry registry, std::string repository, OciFetchOptions opts);

    // The manifest or index `ref` (tag or digest), at most kOciManifestMax bytes; *content_type
    // gets the Content-Type header.
    std::string get_manifest(const std::string& ref, std::string* content_type);
    // A small blob (the config), checked against the descriptor's size and digest.
    std::string get_small_blob(const OciDescriptor& d);
    // Streams the blob into `sink`, refusing more than d.size bytes. sink.finish() is not called.
    void stream_blob(const OciDescriptor& d, ByteSink& sink);

    // The Bearer token got so far ("" if none), to hand to the per-layer clients so each does
    // not ask the token server again.
    std::string token();
    void set_token(std::string t);

    // "http(s)://endpoint/v2/<repository>/" (for messages).
    const std::string& base_url() const { return base_; }

private:
    void fetch(const std::string& url, ByteSink& sink, uint64_t max, const char* accept, std::string* content_type);
    std::string get_token(const OciBearerChallenge& c);

    OciRegistry registry_;
    std::string repository_;
    OciFetchOptions opts_;
    std::string base_;
    std::mutex token_mutex_;
    std::string token_;
    unsigned token_fetches_ = 0;
};

}  // namespace mk::core
