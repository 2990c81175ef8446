// RendezvousTestServer: a real gRPC server on 127.0.0.1 (port 0) whose Coordinator service answers
// StoreSet/StoreGet by forwarding to a RendezvousService, the way the coordinator's own service
// does. Every other Coordinator RPC stays UNIMPLEMENTED (the generated base class's answer).
//
// Starts in the constructor (CHECK-fails when it cannot bind) and shuts down in the destructor.
// Thread-safety: address(), NewChannel() and rendezvous() may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/channel.h>
#include <grpcpp/server.h>

#include "parallel/rendezvous_service.h"

namespace gemmaserve::parallel {

class RendezvousTestServer {
 public:
  explicit RendezvousTestServer(RendezvousOptions options = {});
  ~RendezvousTestServer();

  const std::string& address() const { return address_; }  // "127.0.0.1:PORT"
  std::shared_ptr<grpc::Channel> NewChannel() const;
  RendezvousService& rendezvous() { return rendezvous_; }

 private:
  class Service;

  RendezvousService rendezvous_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace gemmaserve::parallel
