#include "tests/parallel/rendezvous_test_server.h"

#include <chrono>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "gemmaserve/internal/v1/worker.grpc.pb.h"

namespace gemmaserve::parallel {

class RendezvousTestServer::Service final : public internal::v1::Coordinator::Service {
 public:
  explicit Service(RendezvousService& rendezvous) : rendezvous_(rendezvous) {}

  grpc::Status StoreSet(grpc::ServerContext*, const internal::v1::StoreSetRequest* request,
                        internal::v1::StoreSetResponse* response) override {
    return rendezvous_.StoreSet(*request, response);
  }
  grpc::Status StoreGet(grpc::ServerContext*, const internal::v1::StoreGetRequest* request,
                        internal::v1::StoreGetResponse* response) override {
    return rendezvous_.StoreGet(*request, response);
  }

 private:
  RendezvousService& rendezvous_;
};

RendezvousTestServer::RendezvousTestServer(RendezvousOptions options)
    : rendezvous_(options), service_(std::make_unique<Service>(rendezvous_)) {
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  CHECK(server_ != nullptr && port > 0) << "cannot start the rendezvous test server";
  address_ = absl::StrCat("127.0.0.1:", port);
}

RendezvousTestServer::~RendezvousTestServer() {
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

std::shared_ptr<grpc::Channel> RendezvousTestServer::NewChannel() const {
  return grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
}

}  // namespace gemmaserve::parallel
