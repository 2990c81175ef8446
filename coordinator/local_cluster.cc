#include "coordinator/local_cluster.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator {

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(const LocalClusterOptions& options) {
  std::unique_ptr<LocalCluster> cluster(new LocalCluster());
  cluster->group_ = std::make_unique<WorkerGroup>(options.spec);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.internal_address, grpc::InsecureServerCredentials(),
                           &cluster->port_);
  builder.RegisterService(cluster->group_.get());
  cluster->server_ = builder.BuildAndStart();
  if (cluster->server_ == nullptr || cluster->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.internal_address));
  }
  spdlog::info("coordinator internal port {}", cluster->port_);
  if (options.launch_workers) {
    LaunchOptions launch;
    launch.binary = options.worker_binary;
    launch.coordinator = absl::StrCat("127.0.0.1:", cluster->port_);
    launch.world_size = options.spec.layout.world_size();
    launch.extra_args = options.worker_args;
    launch.metrics_port_base = options.metrics_port_base;
    LocalCluster* raw = cluster.get();
    ASSIGN_OR_RETURN(cluster->launcher_,
                     LocalLauncher::Start(launch, [raw](int rank, const std::string& how) {
                       absl::MutexLock lock(&raw->death_mu_);
                       if (raw->death_.empty()) raw->death_ = absl::StrCat("worker rank ", rank, " ", how);
                       raw->worker_died_ = true;
                     }));
  }
  if (options.wait_ready) RETURN_IF_ERROR(cluster->WaitReady(options.ready_timeout));
  return cluster;
}

absl::Status LocalCluster::WaitReady(absl::Duration timeout) {
  // Wait in slices so a worker that dies during start-up fails the wait at once.
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::Status ready = group_->WaitReady(absl::Milliseconds(200));
    if (ready.ok()) return ready;
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
