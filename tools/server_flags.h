// Flags that secure and bound the serving processes, shared by `serve` and `coordinator` (the
// client APIs and the internal port) and by `worker` (the internal port): API keys and TLS of
// the public ports, the HTTP server's limits, per-request limits, per-key prefix caching, and
// the cluster secret and mutual TLS of the internal port. Defaults come from the option structs
// they fill, so each default is stated once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/api/http_server.h"
#include "coordinator/api/inference_service.h"
#include "parallel/internal_auth.h"
#include "tools/flags.h"

namespace gemmaserve::tools {

// --cluster-secret-file and --internal-tls-{cert,key,ca}; the secret may also come from the
// environment variable GEMMASERVE_CLUSTER_SECRET.
struct InternalPortFlags {
  std::string cluster_secret_file;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;

  void AddFlags(FlagSet& flags);
  // The options; the secret from the file, else the environment, else empty.
  absl::StatusOr<parallel::InternalAuthOptions> Resolve() const;
};

struct ApiFlags {
  ApiFlags();

  std::vector<std::string> api_keys;
  std::string api_key_file;
  std::string tls_cert;
  std::string tls_key;
  int64_t http_threads;
  int64_t tokenizer_threads;
  int64_t max_connections;
  int64_t max_header_bytes;
  int64_t max_body_bytes;
  int64_t request_timeout_s;
  int64_t write_timeout_s;
  int64_t max_stop_strings;
  int64_t max_stop_string_bytes;
  bool prefix_cache_per_key = false;

  void AddFlags(FlagSet& flags);
  // Fills both servers' options: keys from --api-key, --api-key-file and GEMMASERVE_API_KEY,
  // bounds checked (INVALID_ARGUMENT naming the flag).
  absl::Status Apply(coordinator::api::HttpServerOptions* http,
                     coordinator::api::GrpcApiServerOptions* grpc) const;
};

// Raises this process's soft limit on open files to its hard limit (a server's connections each
// take one); returns the limit now in force.
int64_t RaiseOpenFileLimit();

}  // namespace gemmaserve::tools
