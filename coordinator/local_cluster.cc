#include "coordinator/local_cluster.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/secrets.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator {
namespace {

// A memory file holding `secret`, inherited by child processes (no close-on-exec).
absl::StatusOr<int> SecretMemoryFile(const std::string& secret) {
  const int fd = memfd_create("gemmaserve-cluster-secret", 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("memfd_create: ", std::strerror(errno)));
  if (write(fd, secret.data(), secret.size()) != static_cast<ssize_t>(secret.size())) {
    close(fd);
    return absl::InternalError(absl::StrCat("writing the cluster secret: ", std::strerror(errno)));
  }
  return fd;
}

// The address local workers dial: the internal address, with a wildcard host made loopback.
std::string LocalDialAddress(const std::string& internal_address, int port) {
  std::string host = internal_address.substr(0, internal_address.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  return absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(const LocalClusterOptions& options) {
  std::unique_ptr<LocalCluster> cluster(new LocalCluster());
  LocalCluster* raw = cluster.get();
  cluster->restart_workers_ = options.launch_workers && options.restart_workers;
  parallel::InternalAuthOptions auth = options.auth;
  if (auth.cluster_secret.empty() && options.launch_workers) auth.cluster_secret = RandomHex(32);
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   parallel::InternalServerCredentials(auth));
  cluster->group_ = std::make_unique<WorkerGroup>(options.spec);
  cluster->group_->SetFailureCallback([raw](uint64_t generation, const std::string&) {
    if (raw->restarting_) raw->launcher_->RestartAll(generation);
  });
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.internal_address, credentials, &cluster->port_);
  // A second coordinator on the same port must fail to bind, not share the port's connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  const int max_message_bytes = static_cast<int>(options.spec.max_message_bytes);
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(max_message_bytes);
  if (auth.cluster_secret.empty()) {
    builder.RegisterService(cluster->group_.get());
  } else {
    cluster->checked_ = std::make_unique<parallel::SecretCheckingCoordinator>(
        cluster->group_.get(), auth.cluster_secret);
    builder.RegisterService(cluster->checked_.get());
  }
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
    launch.coordinator = LocalDialAddress(options.internal_address, cluster->port_);
    launch.world_size = options.spec.layout.world_size();
    launch.extra_args = options.worker_args;
    ASSIGN_OR_RETURN(cluster->secret_fd_, SecretMemoryFile(auth.cluster_secret));
    launch.extra_args.insert(
        launch.extra_args.end(),
        {"--cluster-secret-file", absl::StrCat("/proc/self/fd/", cluster->secret_fd_)});
    if (auth.tls()) {
      launch.extra_args.insert(launch.extra_args.end(),
                               {"--internal-tls-cert", auth.tls_cert_file, "--internal-tls-key",
                                auth.tls_key_file, "--internal-tls-ca", auth.tls_ca_file});
    }
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
  if (secret_fd_ >= 0) close(secret_fd_);
}

}  // namespace gemmaserve::coordinator
