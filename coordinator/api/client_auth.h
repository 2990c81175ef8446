// Client authentication of the public APIs. With API keys configured, every request except the
// probes (/health, /ready, /metrics, and gRPC's grpc.health.v1) must carry one of them:
// "Authorization: Bearer KEY" over HTTP (else 401 in OpenAI's error shape), metadata
// "authorization: Bearer KEY" over gRPC (else UNAUTHENTICATED). Keys are kept only as SHA-256
// digests and compared in constant time (common/secrets.h).
//
// A Client is what the servers know about who sent a request: which key, and from where. It
// scopes what one client may do to another's requests: request ids live in the namespace of
// their owner (the key, or the connection when authentication is off), so a gRPC Abort reaches
// only the caller's own requests, and with per-key prefix caching the key salts the cache.
//
// Immutable after construction; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/secrets.h"
#include "coordinator/api/generate_params.h"

namespace gemmaserve::coordinator::api {

struct Client {
  std::string key_id;  // "key-" + 16 hex digits of the key's digest; empty without authentication
  std::string peer;    // the connection, e.g. "ipv4:127.0.0.1:41234"

  // The namespace of this client's request ids: its key, or its connection without keys.
  const std::string& owner() const { return key_id.empty() ? peer : key_id; }
};

class ApiKeys {
 public:
  // No keys: authentication is off and every request is let in.
  ApiKeys() = default;
  // The union of `keys` (e.g. repeated --api-key flags), the non-empty, non-comment lines of
  // `key_file` (when not empty) and the comma-separated keys of `env_value` (GEMMASERVE_API_KEY;
  // may be empty). INVALID_ARGUMENT naming the source for a malformed key (see CheckSecret);
  // a key file that cannot be read is its error.
  static absl::StatusOr<ApiKeys> Load(const std::vector<std::string>& keys,
                                      const std::string& key_file, std::string_view env_value);

  bool enabled() const { return !digests_.empty(); }
  size_t size() const { return digests_.size(); }

  // The key id of the client presenting `authorization` (an Authorization header's value), ""
  // when authentication is off, UNAUTHENTICATED when the header is missing or names no key.
  absl::StatusOr<std::string> Authenticate(std::string_view authorization) const;

 private:
  std::vector<SecretDigest> digests_;
};

// What both client APIs apply to every request: who may send it, what it may ask for, and
// whether the prefix cache is shared among keys.
struct ClientPolicy {
  ApiKeys api_keys;  // none: authentication off
  RequestLimits limits;
  // Salt the prefix cache with the client's key, so that one tenant's cached_tokens says nothing
  // about another's prompts (requests under one key still share their prefixes).
  bool prefix_cache_per_key = false;

  std::string CacheSalt(const Client& client) const {
    return prefix_cache_per_key ? client.key_id : std::string();
  }
};

}  // namespace gemmaserve::coordinator::api
