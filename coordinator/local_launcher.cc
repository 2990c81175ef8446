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
    std::vector<std::string> args = {binary, "worker", "--coordinator", options.coordinator,
                                     "--rank", absl::StrCat(rank), "--world-size",
                                     absl::StrCat(options.world_size)};
    const int metrics_port = options.metrics_port_base > 0 ? options.metrics_port_base + rank
                                                           : options.metrics_port_base;
    args.insert(args.end(), {"--metrics-port", absl::StrCat(metrics_port)});
    args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
    absl::StatusOr<pid_t> pid = Spawn(args);
    if (!pid.ok()) {
      for (pid_t started : pids) kill(started, SIGKILL);
      for (pid_t started : pids) waitpid(started, nullptr, 0);
      return pid.status();
    }
    pids.push_back(*pid);
  }
  return std::unique_ptr<LocalLauncher>(new LocalLauncher(std::move(pids), std::move(on_exit)));
}

LocalLauncher::LocalLauncher(std::vector<pid_t> pids, ExitCallback on_exit)
    : on_exit_(std::move(on_exit)), pids_(std::move(pids)) {
  reaper_ = std::thread([this] { ReapLoop(); });
}

LocalLauncher::~LocalLauncher() {
  Stop();
  done_ = true;
  reaper_.join();
}

int LocalLauncher::ReapExited(bool report) {
  int running = 0;
  std::vector<std::pair<int, std::string>> exits;
  {
    absl::MutexLock lock(&mu_);
    for (int rank = 0; rank < static_cast<int>(pids_.size()); ++rank) {
      if (pids_[rank] == 0) continue;
      int status = 0;
      const pid_t result = waitpid(pids_[rank], &status, WNOHANG);
      if (result == pids_[rank]) {
        pids_[rank] = 0;
        if (report && !stopping_) exits.push_back({rank, DescribeExit(status)});
      } else {
        ++running;
      }
    }
  }
  for (const auto& [rank, how] : exits) {
    spdlog::error("worker rank {} {}", rank, how);
    if (on_exit_) on_exit_(rank, how);
  }
  return running;
}

void LocalLauncher::ReapLoop() {
  while (!done_) {
    ReapExited(/*report=*/true);
    absl::SleepFor(absl::Milliseconds(100));
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
      if (pid != 0) kill(pid, SIGTERM);
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
