// LocalLauncher: starts the worker processes of a single-host replica (`gemmaserve serve --tp N`)
// as children running `gemmaserve worker ...`, watches them, and reaps them. A worker that exits
// on its own is reported through the callback with its exit status; RestartAll replaces every
// worker when the replica has to be formed anew (WorkerGroup generations); the destructor stops
// them all (SIGTERM, then SIGKILL after a grace period). Children also die with the launcher's
// process (PR_SET_PDEATHSIG), so no worker outlives a crashed coordinator.
//
// Thread-safety: every method may be called from any thread; the exit callback runs on the
// launcher's reaper thread, which also carries out restarts.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
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
  // Pause between a RestartAll and the new workers' start: a worker that fails at once does not
  // spin, and what a dead one held (memory, ports) is released first.
  absl::Duration restart_delay = absl::Seconds(1);
};

// A worker that exited on its own.
struct WorkerExit {
  int rank = 0;
  uint64_t generation = 0;  // the generation it was launched for (Start: 1, or RestartAll's)
  std::string how;          // "exited with status 1", "killed by signal 9", ...
};

class LocalLauncher {
 public:
  using ExitCallback = std::function<void(const WorkerExit& exit)>;

  // Starts every rank for generation 1.
  static absl::StatusOr<std::unique_ptr<LocalLauncher>> Start(const LaunchOptions& options,
                                                              ExitCallback on_exit);
  ~LocalLauncher();

  // Replaces every worker, asynchronously: the reaper thread kills them all (SIGKILL: a stopped or
  // stuck worker too) and, restart_delay after this call, starts each rank again for
  // `generation`. Workers cannot rejoin a group whose member died mid-collective, so the live
  // ones are replaced as well.
  void RestartAll(uint64_t generation);
  // Stops every running worker: SIGTERM (with SIGCONT, so a stopped one acts on it), then SIGKILL
  // after `grace`; returns once all are reaped. No restart happens afterwards.
  void Stop(absl::Duration grace = absl::Seconds(5));
  int num_running() const;

 private:
  LocalLauncher(LaunchOptions options, std::string binary, std::vector<pid_t> pids,
                ExitCallback on_exit);
  void ReapLoop();
  // Kills every worker, and at `start_at` starts them again for `generation`.
  void Restart(uint64_t generation, absl::Time start_at);
  // Reaps every exited child; returns how many are still running.
  int ReapExited(bool report) ABSL_LOCKS_EXCLUDED(mu_);

  const LaunchOptions options_;
  const std::string binary_;  // options_.binary resolved
  ExitCallback on_exit_;
  mutable absl::Mutex mu_;
  std::vector<pid_t> pids_ ABSL_GUARDED_BY(mu_);  // per rank; 0 once reaped
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;  // what pids_ were launched for
  uint64_t restart_to_ ABSL_GUARDED_BY(mu_) = 0;  // a restart RestartAll asked for; 0: none
  absl::Time restart_at_ ABSL_GUARDED_BY(mu_);      // when to carry it out
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reaper_;
};

}  // namespace gemmaserve::coordinator
