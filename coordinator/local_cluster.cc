#include "coordinator/local_cluster.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator {

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(const LocalClusterOptions& options) {
  std::unique_ptr<LocalCluster> cluster(new LocalCluster());
  LocalCluster* raw = cluster.get();
  cluster->restart_workers_ = options.launch_workers && options.restart_workers;
  cluster->group_ = std::make_unique<WorkerGroup>(options.spec);
  cluster->group_->SetFailureCallback([raw](uint64_t generation, const std::string&) {
    if (raw->restarting_) raw->launcher_->RestartAll(generation);
  });
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.internal_address, grpc::InsecureServerCredentials(),
                           &cluster->port_);
  // A second coordinator on the same port must fail to bind, not share the port's connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  const int max_message_bytes = static_cast<int>(options.spec.max_message_bytes);
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(max_message_bytes);
  builder.RegisterService(cluster->group_.get());
  cluster->server_ = builder.BuildAndStart();
  if (cluster->server_ == nullptr || cluster->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("internal port: cannot listen on ",
                                               options.internal_address,
                                               " (is another process using it?)"));
  }
  spdlog::info("coordinator internal port {}", cluster->port_);
  if (options.launch_workers) {
    LaunchOptions launch;
    launch.binary = options.worker_binary;
    launch.coordinator = absl::StrCat("127.0.0.1:", cluster->port_);
    launch.world_size = options.spec.layout.world_size();
    launch.extra_args = options.worker_args;
    launch.metrics_port_base = options.metrics_port_base;
    ASSIGN_OR_RETURN(cluster->launcher_,
                     LocalLauncher::Start(launch, [raw](const WorkerExit& exit) {
                       raw->OnWorkerExit(exit);
                     }));
  }
  if (options.wait_ready) RETURN_IF_ERROR(cluster->WaitReady(options.ready_timeout));
  return cluster;
}

void LocalCluster::OnWorkerExit(const WorkerExit& exit) {
  const std::string how = absl::StrCat("worker rank ", exit.rank, " ", exit.how);
  if (restarting_) {
    // A worker that dies after attaching has ended its generation already (its stream broke);
    // one that dies before must end it too, or the others would wait for it.
    group_->Fail(how, exit.generation);
    return;
  }
  absl::MutexLock lock(&death_mu_);
  if (death_.empty()) death_ = how;
  worker_died_ = true;
}

absl::Status LocalCluster::WaitReady(absl::Duration timeout) {
  // Wait in slices so a worker that dies during start-up fails the wait at once.
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::Status ready = group_->WaitReady(absl::Milliseconds(200));
    if (ready.ok()) {
      if (restart_workers_) restarting_ = true;
      return ready;
    }
    if (worker_died_) {
      absl::MutexLock lock(&death_mu_);
      return absl::UnavailableError(absl::StrCat(death_, " before the replica was ready"));
    }
    if (absl::Now() > deadline || absl::IsUnavailable(ready)) return ready;
  }
}

LocalCluster::~LocalCluster() {
  if (group_ != nullptr) group_->Shutdown("coordinator stopping");
  if (launcher_ != nullptr) launcher_->Stop();
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace gemmaserve::coordinator
