// MetricsHttpServer: the worker's HTTP endpoint for Prometheus scrapes and Kubernetes probes.
// GET /metrics and GET /health answer 200 with the text `body()` returns; anything else is 404.
// One thread, asynchronous (Boost.Beast), each connection closed after its response and given
// up after 10 s of silence.
//
// Why not prometheus-cpp's Exposer: its civetweb server runs its threads on fixed 100 KiB stacks,
// and glibc carves every thread's static TLS out of its stack. With OpenBLAS loaded (61 KiB of
// TLS) what was left overflowed on the first scrape and killed the worker.
//
// Ownership: the server owns its thread; destroying it stops serving and joins the thread.
// Thread-safety: `body` runs on the server's thread and must be thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"

namespace gemmaserve::worker {

class MetricsHttpServer {
 public:
  // Listens on bind_address:port (port 0: any free port). UNAVAILABLE naming the address when it
  // cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& bind_address, int port, std::function<std::string()> body);
  ~MetricsHttpServer();

  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

 private:
  explicit MetricsHttpServer(std::function<std::string()> body);
  void Accept();

  const std::function<std::string()> body_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace gemmaserve::worker
