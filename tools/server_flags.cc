#include "tools/server_flags.h"

#include <sys/resource.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/secrets.h"
#include "common/status_macros.h"

namespace gemmaserve::tools {
namespace {

constexpr char kClusterSecretEnv[] = "GEMMASERVE_CLUSTER_SECRET";
constexpr char kApiKeyEnv[] = "GEMMASERVE_API_KEY";

absl::Status AtLeast(const char* flag, int64_t value, int64_t minimum) {
  if (value >= minimum) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, ": must be >= ", minimum, ", got ", value));
}

}  // namespace

void InternalPortFlags::AddFlags(FlagSet& flags) {
  flags.String("cluster-secret-file", &cluster_secret_file,
               "file holding the secret every internal RPC carries (or set " +
                   std::string(kClusterSecretEnv) + ")");
  flags.String("internal-tls-cert", &tls_cert,
               "internal port mutual TLS: this process's PEM certificate chain");
  flags.String("internal-tls-key", &tls_key, "internal port mutual TLS: its PEM private key");
  flags.String("internal-tls-ca", &tls_ca,
               "internal port mutual TLS: PEM CA that signed the other side's certificate");
}

absl::StatusOr<parallel::InternalAuthOptions> InternalPortFlags::Resolve() const {
  parallel::InternalAuthOptions options;
  if (!cluster_secret_file.empty()) {
    ASSIGN_OR_RETURN(options.cluster_secret,
                     ReadSecretFile(cluster_secret_file, "--cluster-secret-file"));
  } else if (const char* env = std::getenv(kClusterSecretEnv); env != nullptr && *env != '\0') {
    options.cluster_secret = env;
    RETURN_IF_ERROR(CheckSecret(options.cluster_secret, kClusterSecretEnv));
  }
  options.tls_cert_file = tls_cert;
  options.tls_key_file = tls_key;
  options.tls_ca_file = tls_ca;
  RETURN_IF_ERROR(options.Validate());
  return options;
}

ApiFlags::ApiFlags() {
  const coordinator::api::HttpServerOptions http;
  const coordinator::api::RequestLimits limits;
  http_threads = http.num_threads;
  tokenizer_threads = http.num_tokenizer_threads;
  max_connections = http.max_connections;
  max_header_bytes = http.max_header_bytes;
  max_body_bytes = http.max_body_bytes;
  request_timeout_s = absl::ToInt64Seconds(http.request_timeout);
  write_timeout_s = absl::ToInt64Seconds(http.write_timeout);
  max_stop_strings = limits.max_stop_strings;
  max_stop_string_bytes = limits.max_stop_string_bytes;
}

void ApiFlags::AddFlags(FlagSet& flags) {
  flags.StringList("api-key", &api_keys,
                   "a key clients must send (Authorization: Bearer KEY); repeatable. Also "
                   "--api-key-file and " +
                       std::string(kApiKeyEnv) + " (comma-separated)");
  flags.String("api-key-file", &api_key_file, "file with one API key per line (# comments)");
  flags.String("tls-cert", &tls_cert, "PEM certificate chain: serve HTTPS and gRPC over TLS");
  flags.String("tls-key", &tls_key, "PEM private key of --tls-cert");
  flags.Int("http-threads", &http_threads, "HTTP event-loop threads");
  flags.Int("tokenizer-threads", &tokenizer_threads,
            "threads that parse HTTP generation requests and tokenize their prompts");
  flags.Int("max-connections", &max_connections,
            "open HTTP connections at most; past it the longest-idle one is closed");
  flags.Int("max-header-bytes", &max_header_bytes, "HTTP request headers at most (else 431)");
  flags.Int("max-body-bytes", &max_body_bytes, "HTTP request body at most (else 413)");
  flags.Int("http-request-timeout-s", &request_timeout_s,
            "seconds an HTTP connection may take to send a request, or idle between requests");
  flags.Int("http-write-timeout-s", &write_timeout_s,
            "seconds one write may wait for a client that does not read; then it is disconnected");
  flags.Int("max-stop-strings", &max_stop_strings,
            "stop strings (and stop token ids) one request may give");
  flags.Int("max-stop-string-bytes", &max_stop_string_bytes, "bytes of one stop string at most");
  flags.Bool("prefix-cache-per-key", &prefix_cache_per_key,
             "salt the prefix cache with the client's API key, so cached_tokens says nothing "
             "about other keys' prompts (needs API keys)");
}

absl::Status ApiFlags::Apply(coordinator::api::HttpServerOptions* http,
                             coordinator::api::GrpcApiServerOptions* grpc) const {
  RETURN_IF_ERROR(AtLeast("http-threads", http_threads, 1));
  RETURN_IF_ERROR(AtLeast("tokenizer-threads", tokenizer_threads, 1));
  RETURN_IF_ERROR(AtLeast("max-connections", max_connections, 1));
  RETURN_IF_ERROR(AtLeast("max-header-bytes", max_header_bytes, 1024));
  RETURN_IF_ERROR(AtLeast("max-body-bytes", max_body_bytes, 1024));
  RETURN_IF_ERROR(AtLeast("http-request-timeout-s", request_timeout_s, 1));
  RETURN_IF_ERROR(AtLeast("http-write-timeout-s", write_timeout_s, 1));
  RETURN_IF_ERROR(AtLeast("max-stop-strings", max_stop_strings, 0));
  RETURN_IF_ERROR(AtLeast("max-stop-string-bytes", max_stop_string_bytes, 1));
  if (tls_cert.empty() != tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  coordinator::api::ClientPolicy policy;
  const char* env = std::getenv(kApiKeyEnv);
  ASSIGN_OR_RETURN(policy.api_keys, coordinator::api::ApiKeys::Load(api_keys, api_key_file,
                                                                    env != nullptr ? env : ""));
  if (prefix_cache_per_key && !policy.api_keys.enabled()) {
    return absl::InvalidArgumentError(
        "--prefix-cache-per-key needs API keys (--api-key, --api-key-file or GEMMASERVE_API_KEY)");
  }
  policy.limits.max_stop_strings = max_stop_strings;
  policy.limits.max_stop_string_bytes = max_stop_string_bytes;
  policy.prefix_cache_per_key = prefix_cache_per_key;

  http->num_threads = static_cast<int>(http_threads);
  http->num_tokenizer_threads = static_cast<int>(tokenizer_threads);
  http->max_connections = static_cast<int>(std::min<int64_t>(max_connections, 1 << 30));
  http->max_header_bytes = max_header_bytes;
  http->max_body_bytes = max_body_bytes;
  http->request_timeout = absl::Seconds(request_timeout_s);
  http->write_timeout = absl::Seconds(write_timeout_s);
  http->policy = policy;
  http->tls_cert_file = tls_cert;
  http->tls_key_file = tls_key;
  grpc->policy = std::move(policy);
  grpc->tls_cert_file = tls_cert;
  grpc->tls_key_file = tls_key;
  return absl::OkStatus();
}

int64_t RaiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur == RLIM_INFINITY ? INT64_MAX : static_cast<int64_t>(limit.rlim_cur);
}

}  // namespace gemmaserve::tools
