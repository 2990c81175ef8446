#include "coordinator/api/inference_service.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/secrets.h"
#include "common/status_macros.h"
#include "coordinator/api/generate_params.h"
#include "coordinator/api/proto_convert.h"
#include "coordinator/api/request_ids.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"

namespace gemmaserve::coordinator::api {

InferenceService::InferenceService(Engine* engine, const ServedModel* model,
                                   const ClientPolicy* policy)
    : engine_(engine), model_(model), policy_(policy) {}

absl::StatusOr<Client> InferenceService::Authenticate(const grpc::ServerContext& context) const {
  Client client;
  client.peer = context.peer();
  if (!policy_->api_keys.enabled()) return client;
  std::string_view authorization;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = std::string_view(it->second.data(), it->second.size());
  }
  absl::StatusOr<std::string> key_id = policy_->api_keys.Authenticate(authorization);
  if (!key_id.ok()) return key_id.status();
  client.key_id = *std::move(key_id);
  return client;
}

grpc::Status InferenceService::Generate(grpc::ServerContext* context,
                                        const v1::GenerateRequest* request,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  absl::StatusOr<Client> client = Authenticate(*context);
  if (!client.ok()) return ToGrpc(client.status());
  absl::StatusOr<GenerateParams> params = ParamsFromProto(*request);
  if (!params.ok()) return ToGrpc(params.status());
  if (params->request_id.empty()) params->request_id = NewRequestId("grpc");
  const std::string request_id = params->request_id;
  const std::string engine_id = ScopedRequestId(client->owner(), request_id);
  params->request_id = engine_id;
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    params->deadline = absl::FromChrono(context->deadline());
  }
  const bool chat = std::holds_alternative<ChatInput>(params->input);
  absl::StatusOr<Request> built = BuildRequest(*std::move(params), *model_,
                                               engine_->Load().max_model_len, policy_->limits);
  if (!built.ok()) return ToGrpc(built.status());
  built->cache_salt = policy_->CacheSalt(*client);
  absl::StatusOr<std::shared_ptr<RequestStream>> events = engine_->Submit(*std::move(built));
  if (absl::IsAlreadyExists(events.status())) {
    // The engine's message names the scoped id; the client knows its own.
    return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                        absl::StrCat("request_id ", request_id, " is in use"));
  }
  if (!events.ok()) return ToGrpc(events.status());
  return StreamEvents(context, **events, engine_id, request_id, chat, writer);
}

grpc::Status InferenceService::StreamEvents(grpc::ServerContext* context, RequestStream& events,
                                            const std::string& engine_id,
                                            const std::string& request_id, bool chat,
                                            grpc::ServerWriter<v1::GenerateResponse>* writer) {
  std::string chat_text;
  v1::GenerateResponse response;
  response.set_request_id(request_id);
  absl::Time cut_at = absl::InfiniteFuture();  // at shutdown: when to stop waiting for the engine
  while (true) {
    std::optional<Event> event = events.Next(kCancelPoll);
    if (!event && shutting_down_.HasBeenNotified()) {
      if (cut_at == absl::InfiniteFuture()) {
        engine_->Abort(engine_id);
        cut_at = absl::Now() + shutdown_grace_ / 2;
      } else if (absl::Now() > cut_at) {
        // The engine did not answer the abort in time: end the stream without it.
        event.emplace();
        event->finished = true;
        event->finish_reason = FinishReason::kAbort;
        event->error = "the server is shutting down";
      }
    }
    if (!event) {
      if (!context->IsCancelled()) continue;
      engine_->Abort(engine_id);
      return grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
    }
    const bool has_delta = !event->text.empty() || !event->token_ids.empty() ||
                           !event->prompt_logprobs.empty();
    if (has_delta) {
      if (chat) chat_text += event->text;
      *response.mutable_delta() = DeltaFromEvent(*event, model_->tokenizer());
      if (!writer->Write(response)) {
        engine_->Abort(engine_id);
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

grpc::Status InferenceService::Abort(grpc::ServerContext* context,
                                     const v1::AbortRequest* request, v1::AbortResponse*) {
  absl::StatusOr<Client> client = Authenticate(*context);
  if (!client.ok()) return ToGrpc(client.status());
  if (request->request_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request_id: must not be empty");
  }
  // Another owner's request has another engine id: naming it reaches nothing.
  engine_->Abort(ScopedRequestId(client->owner(), request->request_id()));
  return grpc::Status::OK;
}

void InferenceService::BeginShutdown(absl::Duration grace) {
  if (shutting_down_.HasBeenNotified()) return;
  shutdown_grace_ = grace;
  shutting_down_.Notify();
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext* context,
                                        const v1::TokenizeRequest* request,
                                        v1::TokenizeResponse* response) {
  absl::StatusOr<Client> client = Authenticate(*context);
  if (!client.ok()) return ToGrpc(client.status());
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

grpc::Status InferenceService::GetModelInfo(grpc::ServerContext* context,
                                            const v1::GetModelInfoRequest*,
                                            v1::ModelInfo* response) {
  absl::StatusOr<Client> client = Authenticate(*context);
  if (!client.ok()) return ToGrpc(client.status());
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

grpc::Status InferenceService::GetLoad(grpc::ServerContext* context, const v1::GetLoadRequest*,
                                       v1::Load* response) {
  absl::StatusOr<Client> client = Authenticate(*context);
  if (!client.ok()) return ToGrpc(client.status());
  *response = LoadToProto(engine_->Load(), engine_->Ready());
  return grpc::Status::OK;
}

absl::StatusOr<std::unique_ptr<GrpcApiServer>> GrpcApiServer::Start(
    const GrpcApiServerOptions& options, Engine* engine, const ServedModel* model) {
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    ASSIGN_OR_RETURN(std::string cert, ReadCredentialFile(options.tls_cert_file, "--tls-cert"));
    ASSIGN_OR_RETURN(std::string key, ReadCredentialFile(options.tls_key_file, "--tls-key"));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({std::move(key), std::move(cert)});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto policy = std::make_unique<ClientPolicy>(options.policy);
  auto service = std::make_unique<InferenceService>(engine, model, policy.get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.address, credentials, &port);
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
      new GrpcApiServer(std::move(policy), std::move(service), std::move(server), port));
  api->SetServing(engine->Ready());
  return api;
}

GrpcApiServer::GrpcApiServer(std::unique_ptr<ClientPolicy> policy,
                             std::unique_ptr<InferenceService> service,
                             std::unique_ptr<grpc::Server> server, int port)
    : policy_(std::move(policy)),
      service_(std::move(service)),
      server_(std::move(server)),
      port_(port) {}

GrpcApiServer::~GrpcApiServer() { Shutdown(); }

void GrpcApiServer::SetServing(bool serving) {
  if (server_ == nullptr) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(serving);
  }
}

void GrpcApiServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  // Open Generate calls write their final message within the grace period; whatever is still
  // open after it sees IsCancelled() and aborts its request.
  service_->BeginShutdown(grace);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  server_.reset();
}

}  // namespace gemmaserve::coordinator::api
