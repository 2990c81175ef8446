// InferenceService: the gRPC gemmaserve.v1.Inference service (proto/gemmaserve/v1/inference.proto)
// over an Engine, on gRPC's synchronous API: a Generate call holds one server thread, which waits
// on the request's RequestStream in short slices so that a cancelled call or a passed deadline
// aborts the request within kCancelPoll.
//
// With API keys (ClientPolicy), every call of gemmaserve.v1.Inference needs metadata
// "authorization: Bearer KEY" (else UNAUTHENTICATED). Request ids are scoped by their owner
// (client_auth.h): Abort ends only a request the same key (or, without keys, the same
// connection) started, and a client-chosen request_id never collides with another client's.
//
// GrpcApiServer runs it on its own port with grpc.health.v1 (the default health service; the
// overall status follows Engine::Ready through SetServing; open to all, as a probe) and server
// reflection, over TLS when given a certificate. Shutdown gives every open Generate call its
// final message (finish reason abort when the request had to be cut) before the call ends.
//
// Thread-safety: all methods may be called concurrently. The Engine and ServedModel must outlive
// both classes.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/synchronization/notification.h"
#include "coordinator/api/client_auth.h"
#include "coordinator/api/served_model.h"
#include "coordinator/engine.h"
#include "gemmaserve/v1/inference.grpc.pb.h"
#include "grpcpp/server.h"

namespace gemmaserve::coordinator::api {

class InferenceService final : public v1::Inference::Service {
 public:
  // How often a waiting Generate checks for cancellation.
  static constexpr absl::Duration kCancelPoll = absl::Milliseconds(50);

  // `policy` must outlive the service.
  InferenceService(Engine* engine, const ServedModel* model, const ClientPolicy* policy);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Abort(grpc::ServerContext* context, const v1::AbortRequest* request,
                     v1::AbortResponse* response) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;
  grpc::Status GetLoad(grpc::ServerContext* context, const v1::GetLoadRequest* request,
                       v1::Load* response) override;

  // Open Generate calls abort their requests and end with a final message within `grace`
  // (abort, with what usage the engine reported, or a bare abort if it reported nothing).
  void BeginShutdown(absl::Duration grace);

 private:
  // The caller, or UNAUTHENTICATED.
  absl::StatusOr<Client> Authenticate(const grpc::ServerContext& context) const;
  // Streams `events` to `writer` until the final event; aborts on cancel, a failed write or
  // shutdown. `engine_id` is the scoped id, `request_id` the client's.
  grpc::Status StreamEvents(grpc::ServerContext* context, RequestStream& events,
                            const std::string& engine_id, const std::string& request_id,
                            bool chat, grpc::ServerWriter<v1::GenerateResponse>* writer);

  Engine* engine_;
  const ServedModel* model_;
  const ClientPolicy* policy_;
  absl::Notification shutting_down_;
  absl::Duration shutdown_grace_;  // written before shutting_down_ is notified
};

struct GrpcApiServerOptions {
  std::string address = "0.0.0.0:50051";  // "HOST:0" picks a free port
  // Largest request message; a prompt of token ids or a long conversation must fit.
  int max_receive_bytes = 16 << 20;
  ClientPolicy policy;
  // PEM certificate chain and private key: serve TLS. Both empty: plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
};

class GrpcApiServer {
 public:
  // UNAVAILABLE when the address cannot be bound; the TLS files' errors.
  static absl::StatusOr<std::unique_ptr<GrpcApiServer>> Start(const GrpcApiServerOptions& options,
                                                              Engine* engine,
                                                              const ServedModel* model);
  ~GrpcApiServer();  // Shutdown()

  int port() const { return port_; }
  // Sets grpc.health.v1's overall status (SERVING / NOT_SERVING); the coordinator calls it when
  // readiness changes.
  void SetServing(bool serving);
  // Ends open calls as InferenceService::BeginShutdown does, within `grace`, then cancels what
  // is left and waits for the handlers to return.
  void Shutdown(absl::Duration grace = absl::Seconds(2));

 private:
  GrpcApiServer(std::unique_ptr<ClientPolicy> policy, std::unique_ptr<InferenceService> service,
                std::unique_ptr<grpc::Server> server, int port);

  std::unique_ptr<ClientPolicy> policy_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_;
};

}  // namespace gemmaserve::coordinator::api
