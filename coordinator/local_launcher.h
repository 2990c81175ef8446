// LocalLauncher: starts the worker processes of a single-host replica (`gemmaserve serve --tp N`)
// as children running `gemmaserve worker ...`, watches them, and reaps them. A worker that exits
// on its own is reported through the callback with its exit status; the launcher's destructor
// stops the rest (SIGTERM, then SIGKILL after a grace period). Children also die with the
// launcher's process (PR_SET_PDEATHSIG), so no worker outlives a crashed coordinator.
//
// Thread-safety: the exit callback runs on the launcher's reaper thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gemmaserve::coordinator {

struct LaunchOptions {
  std::string binary = "/proc/self/exe";  // the gemmaserve executable
  std::string coordinator;                // HOST:PORT the workers dial
  int world_size = 1;
  std::vector<std::string> extra_args;    // appended to every worker's command line
  // Worker r serves metrics on metrics_port_base + r; 0 gives each a free port, −1 none.
  int metrics_port_base = 0;
};

class LocalLauncher {
 public:
  // rank, and a description such as "exited with status 1" or "killed by signal 9".
  using ExitCallback = std::function<void(int rank, const std::string& how)>;

  static absl::StatusOr<std::unique_ptr<LocalLauncher>> Start(const LaunchOptions& options,
                                                              ExitCallback on_exit);
  ~LocalLauncher();

  // Stops every running worker: SIGTERM, then SIGKILL after `grace`; returns once all are reaped.
  void Stop(absl::Duration grace = absl::Seconds(5));
  int num_running() const;

 private:
  LocalLauncher(std::vector<pid_t> pids, ExitCallback on_exit);
  void ReapLoop();
  // Reaps every exited child; returns how many are still running.
  int ReapExited(bool report) ABSL_LOCKS_EXCLUDED(mu_);

  ExitCallback on_exit_;
  mutable absl::Mutex mu_;
  std::vector<pid_t> pids_ ABSL_GUARDED_BY(mu_);  // per rank; 0 once reaped
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> done_{false};
  std::thread reaper_;
};

}  // namespace gemmaserve::coordinator
