// LocalCluster: a coordinator's internal gRPC server with its WorkerGroup, plus (when asked) the
// local worker processes of a single-host replica. `gemmaserve serve --tp N`, `run --tp N` and
// `logits --tp N` run on one; `gemmaserve coordinator` runs one without local workers and waits
// for workers started elsewhere (an orchestrator restarts those that fail).
//
// With restart_workers, once the replica has been ready a generation that ends (a worker died or
// stalled) makes the launcher replace every local worker, and a replacement that exits before it
// attached ends its generation too, so the replica keeps trying to come back. Before the first
// ready, a worker that exits fails WaitReady instead (a bad model or flag would only exit again).
//
// The internal port checks the cluster secret on every RPC (parallel/internal_auth.h). With
// local workers and no secret given, a random one is made; local workers (replacements too) read
// it from a memory file they inherit (`--cluster-secret-file /proc/self/fd/N`), so it is never on
// disk, on a command line or in an environment. With mutual TLS they present the coordinator's
// own certificate.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/local_launcher.h"
#include "coordinator/worker_group.h"
#include "grpcpp/grpcpp.h"
#include "parallel/internal_auth.h"

namespace gemmaserve::coordinator {

struct LocalClusterOptions {
  ClusterSpec spec;
  std::string internal_address = "127.0.0.1:0";  // port 0 picks a free port
  // The secret every internal RPC must carry, and mutual TLS. An empty secret with local workers
  // gets a random one; without local workers, it leaves the port open (tests only).
  parallel::InternalAuthOptions auth;
  bool launch_workers = true;                    // spawn spec.layout.world_size() local workers
  std::string worker_binary = "/proc/self/exe";
  std::vector<std::string> worker_args;          // e.g. {"--threads", "1"}
  int metrics_port_base = -1;                    // see LaunchOptions
  bool wait_ready = true;                        // Start returns once every rank is attached
  absl::Duration ready_timeout = absl::Seconds(300);
  bool restart_workers = false;                  // see the file comment
};

class LocalCluster {
 public:
  // Starts the server (and the local workers), then, with options.wait_ready, waits for them
  // as WaitReady(options.ready_timeout) does.
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(const LocalClusterOptions& options);
  // Waits until every rank is attached. A local worker that exits first fails the wait with its
  // exit status; DEADLINE_EXCEEDED after `timeout`. After the first success, restarts begin.
  absl::Status WaitReady(absl::Duration timeout);
  // Shuts the workers down, then the server.
  ~LocalCluster();

  WorkerGroup& group() { return *group_; }
  int internal_port() const { return port_; }
  // Set once any local worker has exited on its own.
  bool worker_died() const { return worker_died_; }

 private:
  LocalCluster() = default;
  void OnWorkerExit(const WorkerExit& exit);

  bool restart_workers_ = false;
  std::atomic<bool> restarting_{false};  // restarts have begun
  std::unique_ptr<WorkerGroup> group_;
  std::unique_ptr<parallel::SecretCheckingCoordinator> checked_;  // the group behind the secret
  int secret_fd_ = -1;  // the memory file local workers read the secret from
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<LocalLauncher> launcher_;
  int port_ = 0;
  std::atomic<bool> worker_died_{false};
  std::string death_;  // how the first worker died, for the start error
  absl::Mutex death_mu_;
};

}  // namespace gemmaserve::coordinator
