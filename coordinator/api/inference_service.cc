#include "coordinator/api/inference_service.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "coordinator/api/generate_params.h"
#include "coordinator/api/proto_convert.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"

namespace gemmaserve::coordinator::api {

InferenceService::InferenceService(Engine* engine, const ServedModel* model)
    : engine_(engine), model_(model) {}

grpc::Status InferenceService::Generate(grpc::ServerContext* context,
                                        const v1::GenerateRequest* request,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  absl::StatusOr<GenerateParams> params = ParamsFromProto(*request);
  if (!params.ok()) return ToGrpc(params.status());
  if (params->request_id.empty()) params->request_id = request_ids_.Next();
  const std::string request_id = params->request_id;
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    params->deadline = absl::FromChrono(context->deadline());
  }
  const bool chat = std::holds_alternative<ChatInput>(params->input);
  absl::StatusOr<Request> built =
      BuildRequest(*std::move(params), *model_, engine_->Load().max_model_len);
  if (!built.ok()) return ToGrpc(built.status());
  absl::StatusOr<std::shared_ptr<RequestStream>> events = engine_->Submit(*std::move(built));
  if (!events.ok()) return ToGrpc(events.status());
  return StreamEvents(context, **events, request_id, chat, writer);
}

grpc::Status InferenceService::StreamEvents(grpc::ServerContext* context, RequestStream& events,
                                            const std::string& request_id, bool chat,
                                            grpc::ServerWriter<v1::GenerateResponse>* writer) {
  std::string chat_text;
  v1::GenerateResponse response;
  response.set_request_id(request_id);
  while (true) {
    std::optional<Event> event = events.Next(kCancelPoll);
    if (!event) {
      if (!context->IsCancelled()) continue;
      engine_->Abort(request_id);
      return grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
    }
    const bool has_delta = !event->text.empty() || !event->token_ids.empty() ||
                           !event->prompt_logprobs.empty();
    if (has_delta) {
      if (chat) chat_text += event->text;
      *response.mutable_delta() = DeltaFromEvent(*event, model_->tokenizer());
      if (!writer->Write(response)) {
        engine_->Abort(request_id);
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
    }
    if (event->finished) {
      *response.mutable_final() = FinalFromEvent(*event, chat ? &chat_text : nullptr, request_id);
      writer->Write(response);
      return grpc::Status::OK;
    }
  }
}

grpc::Status InferenceService::Abort(grpc::ServerContext*, const v1::AbortRequest* request,
                                     v1::AbortResponse*) {
  if (request->request_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request_id: must not be empty");
  }
  engine_->Abort(request->request_id());
  return grpc::Status::OK;
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                        v1::TokenizeResponse* response) {
  absl::StatusOr<GenerateParams> params = ParamsFromProto(*request);
  if (!params.ok()) return ToGrpc(params.status());
  absl::StatusOr<std::vector<int32_t>> ids = PromptIds(*params, *model_);
  if (!ids.ok()) return ToGrpc(ids.status());
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    const std::optional<std::string_view> token = model_->tokenizer().IdToToken(id);
    response->add_tokens(token ? std::string(*token) : std::string());
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                                            v1::ModelInfo* response) {
  response->set_model_name(model_->name());
  response->set_max_model_len(engine_->Load().max_model_len);
  response->set_vocab_size(model_->tokenizer().id_limit());
  for (int32_t id : model_->eos_token_ids()) response->add_eos_token_ids(id);
  response->set_default_temperature(model_->defaults().temperature);
  response->set_default_top_k(model_->defaults().top_k);
  response->set_default_top_p(model_->defaults().top_p);
  response->set_default_min_p(model_->defaults().min_p);
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetLoad(grpc::ServerContext*, const v1::GetLoadRequest*,
                                       v1::Load* response) {
  *response = LoadToProto(engine_->Load(), engine_->Ready());
  return grpc::Status::OK;
}

absl::StatusOr<std::unique_ptr<GrpcApiServer>> GrpcApiServer::Start(
    const GrpcApiServerOptions& options, Engine* engine, const ServedModel* model) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto service = std::make_unique<InferenceService>(engine, model);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.address, grpc::InsecureServerCredentials(), &port);
  // A second server on the same port must fail to bind, not silently share its connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_receive_bytes);
  builder.RegisterService(service.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", options.address,
                                               " (is another process using it?)"));
  }
  auto api = std::unique_ptr<GrpcApiServer>(
      new GrpcApiServer(std::move(service), std::move(server), port));
  api->SetServing(engine->Ready());
  return api;
}

GrpcApiServer::GrpcApiServer(std::unique_ptr<InferenceService> service,
                             std::unique_ptr<grpc::Server> server, int port)
    : service_(std::move(service)), server_(std::move(server)), port_(port) {}

GrpcApiServer::~GrpcApiServer() { Shutdown(); }

void GrpcApiServer::SetServing(bool serving) {
  if (server_ == nullptr) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(serving);
  }
}

void GrpcApiServer::Shutdown() {
  if (server_ == nullptr) return;
  // Open Generate calls see IsCancelled() after the grace period and abort their requests.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
  server_.reset();
}

}  // namespace gemmaserve::coordinator::api
