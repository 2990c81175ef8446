#include "parallel/internal_auth.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"

namespace gemmaserve::parallel {
namespace {

namespace pb = internal::v1;
namespace exp = grpc::experimental;

constexpr char kMetadataKey[] = "authorization";

// Adds the secret to the initial metadata of every call of its channel.
class SecretInterceptor final : public exp::Interceptor {
 public:
  explicit SecretInterceptor(const std::string* value) : value_(value) {}
  void Intercept(exp::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            exp::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kMetadataKey, *value_);
    }
    methods->Proceed();
  }

 private:
  const std::string* value_;
};

class SecretInterceptorFactory final : public exp::ClientInterceptorFactoryInterface {
 public:
  explicit SecretInterceptorFactory(std::string secret) : value_("Bearer " + std::move(secret)) {}
  exp::Interceptor* CreateClientInterceptor(exp::ClientRpcInfo*) override {
    return new SecretInterceptor(&value_);
  }

 private:
  const std::string value_;  // lives as long as the channel, which owns the factory
};

}  // namespace

absl::Status InternalAuthOptions::Validate() const {
  const int num_tls_files = !tls_cert_file.empty() + !tls_key_file.empty() + !tls_ca_file.empty();
  if (num_tls_files != 0 && num_tls_files != 3) {
    return absl::InvalidArgumentError(
        "--internal-tls-cert, --internal-tls-key and --internal-tls-ca go together: mutual TLS "
        "needs this side's certificate and key and the CA of the other side's");
  }
  if (!cluster_secret.empty()) return CheckSecret(cluster_secret, "the cluster secret");
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> InternalServerCredentials(
    const InternalAuthOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (!options.tls()) return grpc::InsecureServerCredentials();
  ASSIGN_OR_RETURN(std::string cert,
                   ReadCredentialFile(options.tls_cert_file, "--internal-tls-cert"));
  ASSIGN_OR_RETURN(std::string key, ReadCredentialFile(options.tls_key_file, "--internal-tls-key"));
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ASSIGN_OR_RETURN(ssl.pem_root_certs,
                   ReadCredentialFile(options.tls_ca_file, "--internal-tls-ca"));
  ssl.pem_key_cert_pairs.push_back({std::move(key), std::move(cert)});
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateInternalChannel(
    const std::string& address, const InternalAuthOptions& options, int64_t max_message_bytes) {
  RETURN_IF_ERROR(options.Validate());
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.tls()) {
    grpc::SslCredentialsOptions ssl;
    ASSIGN_OR_RETURN(ssl.pem_root_certs,
                     ReadCredentialFile(options.tls_ca_file, "--internal-tls-ca"));
    ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                     ReadCredentialFile(options.tls_cert_file, "--internal-tls-cert"));
    ASSIGN_OR_RETURN(ssl.pem_private_key,
                     ReadCredentialFile(options.tls_key_file, "--internal-tls-key"));
    credentials = grpc::SslCredentials(ssl);
  }
  std::vector<std::unique_ptr<exp::ClientInterceptorFactoryInterface>> interceptors;
  if (!options.cluster_secret.empty()) {
    interceptors.push_back(std::make_unique<SecretInterceptorFactory>(options.cluster_secret));
  }
  grpc::ChannelArguments arguments;
  if (max_message_bytes > 0) {
    arguments.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
    arguments.SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  }
  return exp::CreateCustomChannelWithInterceptors(address, credentials, arguments,
                                                  std::move(interceptors));
}

SecretCheckingCoordinator::SecretCheckingCoordinator(pb::Coordinator::Service* inner,
                                                     const std::string& cluster_secret)
    : inner_(inner), secret_(DigestOf(cluster_secret)) {}

grpc::Status SecretCheckingCoordinator::Check(const grpc::ServerContext& context,
                                              const char* method) const {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find(kMetadataKey);
  std::optional<std::string_view> token;
  if (it != metadata.end()) {
    token = BearerToken(std::string_view(it->second.data(), it->second.size()));
  }
  if (token && DigestsEqual(DigestOf(*token), secret_)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      absl::StrCat(method, ": ", token ? "wrong" : "no",
                                   " cluster secret (the internal port needs the coordinator's "
                                   "--cluster-secret-file)"));
}

grpc::Status SecretCheckingCoordinator::GetClusterConfig(grpc::ServerContext* context,
                                                         const pb::GetClusterConfigRequest* request,
                                                         pb::ClusterConfig* response) {
  if (grpc::Status status = Check(*context, "GetClusterConfig"); !status.ok()) return status;
  return inner_->GetClusterConfig(context, request, response);
}

grpc::Status SecretCheckingCoordinator::Register(grpc::ServerContext* context,
                                                 const pb::RegisterRequest* request,
                                                 pb::RegisterResponse* response) {
  if (grpc::Status status = Check(*context, "Register"); !status.ok()) return status;
  return inner_->Register(context, request, response);
}

grpc::Status SecretCheckingCoordinator::Attach(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<pb::CoordinatorMessage, pb::StepResult>* stream) {
  if (grpc::Status status = Check(*context, "Attach"); !status.ok()) return status;
  return inner_->Attach(context, stream);
}

grpc::Status SecretCheckingCoordinator::StoreSet(grpc::ServerContext* context,
                                                 const pb::StoreSetRequest* request,
                                                 pb::StoreSetResponse* response) {
  if (grpc::Status status = Check(*context, "StoreSet"); !status.ok()) return status;
  return inner_->StoreSet(context, request, response);
}

grpc::Status SecretCheckingCoordinator::StoreGet(grpc::ServerContext* context,
                                                 const pb::StoreGetRequest* request,
                                                 pb::StoreGetResponse* response) {
  if (grpc::Status status = Check(*context, "StoreGet"); !status.ok()) return status;
  return inner_->StoreGet(context, request, response);
}

}  // namespace gemmaserve::parallel
