// InferenceService: the gRPC gemmaserve.v1.Inference service (proto/gemmaserve/v1/inference.proto)
// over an Engine, on gRPC's synchronous API: a Generate call holds one server thread, which waits
// on the request's RequestStream in short slices so that a cancelled call or a passed deadline
// aborts the request within kCancelPoll.
//
// GrpcApiServer runs it on its own port with grpc.health.v1 (the default health service; the
// overall status follows Engine::Ready through SetServing) and server reflection.
//
// Thread-safety: all methods may be called concurrently. The Engine and ServedModel must outlive
// both classes.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/api/request_ids.h"
#include "coordinator/api/served_model.h"
#include "coordinator/engine.h"
#include "gemmaserve/v1/inference.grpc.pb.h"
#include "grpcpp/server.h"

namespace gemmaserve::coordinator::api {

class InferenceService final : public v1::Inference::Service {
 public:
  // How often a waiting Generate checks for cancellation.
  static constexpr absl::Duration kCancelPoll = absl::Milliseconds(50);

  InferenceService(Engine* engine, const ServedModel* model);

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

 private:
  // Streams `events` to `writer` until the final event; aborts on cancel or a failed write.
  grpc::Status StreamEvents(grpc::ServerContext* context, RequestStream& events,
                            const std::string& request_id, bool chat,
                            grpc::ServerWriter<v1::GenerateResponse>* writer);

  Engine* engine_;
  const ServedModel* model_;
  RequestIdGenerator request_ids_{"grpc"};
};

struct GrpcApiServerOptions {
  std::string address = "0.0.0.0:50051";  // "HOST:0" picks a free port
  // Largest request message; a prompt of token ids or a long conversation must fit.
  int max_receive_bytes = 16 << 20;
};

class GrpcApiServer {
 public:
  // UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcApiServer>> Start(const GrpcApiServerOptions& options,
                                                              Engine* engine,
                                                              const ServedModel* model);
  ~GrpcApiServer();  // Shutdown()

  int port() const { return port_; }
  // Sets grpc.health.v1's overall status (SERVING / NOT_SERVING); the coordinator calls it when
  // readiness changes.
  void SetServing(bool serving);
  // Cancels open calls (their requests are aborted) and waits for handlers to return.
  void Shutdown();

 private:
  GrpcApiServer(std::unique_ptr<InferenceService> service, std::unique_ptr<grpc::Server> server,
                int port);

  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_;
};

}  // namespace gemmaserve::coordinator::api
