#include "coordinator/local_launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace gemmaserve::coordinator {
namespace {

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("ended with wait status ", status);
}

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the parent died before prctl took effect
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

std::vector<std::string> WorkerArgs(const LaunchOptions& options, const std::string& binary,
                                    int rank) {
  // Every worker is on this machine: its local rank is its rank (whatever LOCAL_RANK this process
  // was given), which with --device cuda puts rank r on the visible GPU r.
  std::vector<std::string> args = {binary, "worker", "--coordinator", options.coordinator,
                                   "--rank", absl::StrCat(rank), "--local-rank",
                                   absl::StrCat(rank), "--world-size",
                                   absl::StrCat(options.world_size)};
  const int metrics_port = options.metrics_port_base > 0 ? options.metrics_port_base + rank
                                                         : options.metrics_port_base;
  args.insert(args.end(), {"--metrics-port", absl::StrCat(metrics_port)});
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  return args;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalLauncher>> LocalLauncher::Start(const LaunchOptions& options,
                                                                     ExitCallback on_exit) {
  std::string binary = options.binary;
  if (binary == "/proc/self/exe") {
    char path[4096];
    const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
    if (n <= 0) return absl::InternalError("cannot resolve /proc/self/exe");
    binary.assign(path, static_cast<size_t>(n));
  }
  std::vector<pid_t> pids;
  for (int rank = 0; rank < options.world_size; ++rank) {
    absl::StatusOr<pid_t> pid = Spawn(WorkerArgs(options, binary, rank));
    if (!pid.ok()) {
      for (pid_t started : pids) kill(started, SIGKILL);
      for (pid_t started : pids) waitpid(started, nullptr, 0);
      return pid.status();
    }
    pids.push_back(*pid);
  }
  return std::unique_ptr<LocalLauncher>(
      new LocalLauncher(options, std::move(binary), std::move(pids), std::move(on_exit)));
}

LocalLauncher::LocalLauncher(LaunchOptions options, std::string binary, std::vector<pid_t> pids,
                             ExitCallback on_exit)
    : options_(std::move(options)),
      binary_(std::move(binary)),
      on_exit_(std::move(on_exit)),
      pids_(std::move(pids)) {
  reaper_ = std::thread([this] { ReapLoop(); });
}

LocalLauncher::~LocalLauncher() {
  Stop();
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  reaper_.join();
}

void LocalLauncher::RestartAll(uint64_t generation) {
  absl::MutexLock lock(&mu_);
  restart_to_ = generation;
  restart_at_ = absl::Now() + options_.restart_delay;
}

int LocalLauncher::ReapExited(bool report) {
  int running = 0;
  std::vector<WorkerExit> exits;
  {
    absl::MutexLock lock(&mu_);
    for (int rank = 0; rank < static_cast<int>(pids_.size()); ++rank) {
      if (pids_[rank] == 0) continue;
      int status = 0;
      const pid_t result = waitpid(pids_[rank], &status, WNOHANG);
      if (result == pids_[rank]) {
        pids_[rank] = 0;
        if (report && !stopping_) exits.push_back({rank, generation_, DescribeExit(status)});
      } else {
        ++running;
      }
    }
  }
  for (const WorkerExit& exit : exits) {
    spdlog::error("worker rank {} (generation {}) {}", exit.rank, exit.generation, exit.how);
    if (on_exit_) on_exit_(exit);
  }
  return running;
}

void LocalLauncher::ReapLoop() {
  while (true) {
    uint64_t restart = 0;
    absl::Time restart_at;
    {
      absl::MutexLock lock(&mu_);
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return done_ || (restart_to_ != 0 && !stopping_);
      };
      mu_.AwaitWithTimeout(absl::Condition(&woken), absl::Milliseconds(100));
      if (done_) return;
      if (!stopping_) std::swap(restart, restart_to_);
      restart_at = restart_at_;
    }
    if (restart != 0) Restart(restart, restart_at);
    ReapExited(/*report=*/true);
  }
}

void LocalLauncher::Restart(uint64_t generation, absl::Time start_at) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    for (pid_t pid : pids_) {
      if (pid != 0) kill(pid, SIGKILL);
    }
    for (pid_t& pid : pids_) {
      if (pid != 0) waitpid(pid, nullptr, 0);
      pid = 0;
    }
  }
  absl::SleepFor(start_at - absl::Now());
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  spdlog::info("restarting {} worker(s) for generation {}", pids_.size(), generation);
  generation_ = generation;
  for (int rank = 0; rank < static_cast<int>(pids_.size()); ++rank) {
    absl::StatusOr<pid_t> pid = Spawn(WorkerArgs(options_, binary_, rank));
    if (pid.ok()) {
      pids_[rank] = *pid;
    } else {
      spdlog::error("cannot restart worker rank {}: {}", rank, std::string(pid.status().message()));
    }
  }
}

int LocalLauncher::num_running() const {
  absl::MutexLock lock(&mu_);
  int running = 0;
  for (pid_t pid : pids_) running += pid != 0 ? 1 : 0;
  return running;
}

void LocalLauncher::Stop(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (pid_t pid : pids_) {
      if (pid == 0) continue;
      kill(pid, SIGTERM);
      kill(pid, SIGCONT);
    }
  }
  const absl::Time deadline = absl::Now() + grace;
  while (ReapExited(false) > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  {
    absl::MutexLock lock(&mu_);
    for (pid_t pid : pids_) {
      if (pid != 0) kill(pid, SIGKILL);
    }
  }
  while (ReapExited(false) > 0) absl::SleepFor(absl::Milliseconds(10));
}

}  // namespace gemmaserve::coordinator
