// ChildProcess: how tests run other programs (the gemmaserve binary, `ip`, this test binary
// again). The child runs in its own process group and is killed if the test dies
// (PR_SET_PDEATHSIG); its stdout, and unless told otherwise its stderr, are read into memory by a
// thread until every process of the group has closed them, so a chatty child never blocks on a
// full pipe. Destroying a ChildProcess kills the whole group and reaps the child: no test leaves
// a process behind. RunProcess wraps it for commands that run to their end. Test-only.
//
// Thread-safety: output() may be called from any thread; everything else from the owning thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gemmaserve::testing {

struct ChildOptions {
  // The environment is this process's, with these variables set and these removed.
  std::vector<std::pair<std::string, std::string>> set_env;
  std::vector<std::string> unset_env;
  // The child's whole stdin; it reads end-of-file after it.
  std::string stdin_data;
  // False: only stdout is captured, and stderr goes to this process's stderr.
  bool capture_stderr = true;
  // Set: the child's soft and hard limit on open files (RLIMIT_NOFILE), inherited by its own
  // children.
  std::optional<int64_t> max_open_files;
};

// How a child ended.
struct ExitStatus {
  int exit_code = -1;  // when it exited; −1 when a signal ended it
  int signal = 0;      // the signal that ended it, else 0
};

class ChildProcess {
 public:
  // Starts argv[0], a path, with `argv` (argv[0] included) as its arguments. INTERNAL when the
  // pipes or the fork fail; a path that cannot be executed makes the child exit with 127.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::vector<std::string>& argv,
                                                             const ChildOptions& options = {});
  // Kill()s.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Everything captured so far (stdout and stderr interleaved as written).
  std::string output() const ABSL_LOCKS_EXCLUDED(mu_);

  // Waits up to `timeout` for the child to exit; nullopt while it still runs.
  std::optional<ExitStatus> Wait(absl::Duration timeout);
  // Sends `signal` to the child alone, not to its group (e.g. SIGTERM to ask it to drain).
  void Signal(int signal);
  // SIGKILL to the whole group (the child, if it still runs, and whatever it left behind), then
  // reaps the child and waits until the output is closed, so output() is complete.
  ExitStatus Kill();

 private:
  ChildProcess() = default;
  void ReadOutput(int fd);

  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;  // once reaped
  bool killed_ = false;
  std::thread reader_;
  mutable absl::Mutex mu_;
  std::string output_ ABSL_GUARDED_BY(mu_);
};

struct ProcessResult {
  bool timed_out = false;  // killed (with its process group) at the deadline
  int exit_code = -1;      // when it exited normally
  int signal = 0;          // when a signal ended it
  std::string output;      // stdout and (unless options say otherwise) stderr, interleaved
  double elapsed_s = 0;
};

// Runs argv to its end, or kills its whole group after `timeout`; processes it leaves behind are
// killed too. A child that cannot be started is a failed run with its reason in `output`.
ProcessResult RunProcess(const std::vector<std::string>& argv, absl::Duration timeout,
                         const ChildOptions& options = {});

// The pids of `parent`'s live (not zombie) children, from /proc.
std::vector<pid_t> ChildrenOf(pid_t parent);
// The arguments `pid` was started with (its /proc/PID/cmdline); empty once it is gone.
std::vector<std::string> CommandLineOf(pid_t pid);
// Whether `pid` exists and is not a zombie (one left to an init that does not reap counts as
// gone). A stopped process is running.
bool IsRunning(pid_t pid);

}  // namespace gemmaserve::testing
