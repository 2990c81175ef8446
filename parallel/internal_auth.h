// Authentication of the coordinator's internal port (gemmaserve.internal.v1.Coordinator:
// GetClusterConfig, Register, Attach, StoreSet, StoreGet). Whoever reaches that port could
// otherwise read the session id, rewrite the rendezvous store or take a rank (and see every
// prompt), so every RPC must carry the cluster secret, a random string the coordinator and its
// workers share through a file (a Kubernetes Secret) or, for `serve`'s own workers, an inherited
// descriptor. Calls without it get UNAUTHENTICATED before any handler runs. Optionally the port
// speaks mutual TLS: the coordinator presents its certificate and accepts only clients whose
// certificate the same CA signed.
//
// The server side wraps the coordinator's service (SecretCheckingCoordinator); the client side is
// a channel whose every call carries the secret as "authorization: Bearer SECRET" metadata.
// The secret is compared through its digest in constant time (common/secrets.h).
//
// Thread-safety: everything here may be used from any thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/secrets.h"
#include "gemmaserve/internal/v1/worker.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/server_credentials.h"

namespace gemmaserve::parallel {

struct InternalAuthOptions {
  // Every RPC carries (client) or must carry (server) this. Empty: no secret (only for servers
  // that tests assemble by hand).
  std::string cluster_secret;
  // PEM files. All three set: mutual TLS; all empty: plaintext; anything else is refused.
  std::string tls_cert_file;  // this side's certificate chain
  std::string tls_key_file;   // its private key
  std::string tls_ca_file;    // the CA that signed the other side's certificate

  bool tls() const { return !tls_cert_file.empty(); }
  // INVALID_ARGUMENT unless the TLS files are all set or all empty, and the secret (if set)
  // is well-formed.
  absl::Status Validate() const;
};

// Insecure, or TLS requiring and verifying client certificates.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> InternalServerCredentials(
    const InternalAuthOptions& options);

// A channel to the coordinator at `address` (HOST:PORT) whose every call carries the secret,
// over TLS (verifying the coordinator against the CA, presenting this side's certificate) when
// the options say so. `max_message_bytes` > 0 raises gRPC's message limits both ways.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateInternalChannel(
    const std::string& address, const InternalAuthOptions& options,
    int64_t max_message_bytes = 0);

// The coordinator's service behind a check of the cluster secret on every call.
class SecretCheckingCoordinator final : public internal::v1::Coordinator::Service {
 public:
  // `inner` must outlive this object.
  SecretCheckingCoordinator(internal::v1::Coordinator::Service* inner,
                            const std::string& cluster_secret);

  grpc::Status GetClusterConfig(grpc::ServerContext* context,
                                const internal::v1::GetClusterConfigRequest* request,
                                internal::v1::ClusterConfig* response) override;
  grpc::Status Register(grpc::ServerContext* context, const internal::v1::RegisterRequest* request,
                        internal::v1::RegisterResponse* response) override;
  grpc::Status Attach(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<internal::v1::CoordinatorMessage,
                                               internal::v1::StepResult>* stream) override;
  grpc::Status StoreSet(grpc::ServerContext* context, const internal::v1::StoreSetRequest* request,
                        internal::v1::StoreSetResponse* response) override;
  grpc::Status StoreGet(grpc::ServerContext* context, const internal::v1::StoreGetRequest* request,
                        internal::v1::StoreGetResponse* response) override;

 private:
  // OK, or UNAUTHENTICATED naming the call.
  grpc::Status Check(const grpc::ServerContext& context, const char* method) const;

  internal::v1::Coordinator::Service* const inner_;
  const SecretDigest secret_;
};

}  // namespace gemmaserve::parallel
