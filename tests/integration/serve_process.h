// ServeProcess: a real `gemmaserve serve` as a child process for the integration tests (a
// ChildProcess: own process group, output captured, everything killed and reaped at the end).
// Start parses the ports from the "serving ..." log line and waits for "ready: N KV pages ...".
// Stop (and the destructor) sends SIGTERM, waits for the drain, then kills the whole group.
// Test-only.
//
// Thread-safety: output() and the accessors may be called from any thread; Start, Terminate,
// WaitExit and Stop from the owning thread only.
#pragma once

#include <signal.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "tests/test_util/child_process.h"

namespace gemmaserve::testing {

class ServeProcess {
 public:
  ServeProcess() = default;
  ~ServeProcess() { Stop(); }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // Starts `gemmaserve serve` on the tiny MoE model with EP 2, every port 0, worker metrics off,
  // plus `extra_flags`; false (with output() telling why) unless it is ready within timeout_s.
  bool Start(const std::vector<std::string>& extra_flags, double timeout_s = 120,
             const ChildOptions& options = {}) {
    std::vector<std::string> argv = {GEMMASERVE_BINARY, "serve",
                                     "--model", "tests/data/gemma4-tiny-moe",
                                     "--ep", "2",
                                     "--host", "127.0.0.1",
                                     "--http-port", "0",
                                     "--grpc-port", "0",
                                     "--internal-port", "0",
                                     "--worker-metrics-port", "-1",
                                     "--threads", "1",
                                     "--kv-cache-mb", "8"};
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(argv, options);
    if (!child.ok()) return false;
    child_ = std::move(*child);

    const std::regex serving(R"(gRPC :(\d+), HTTP :(\d+), internal :(\d+))");
    const std::regex ready(
        R"(ready: (\d+) KV pages \((\d+) sliding or (\d+) full blocks of (\d+) tokens each\), )"
        R"(max model length (\d+))");
    const absl::Time give_up = absl::Now() + absl::Seconds(timeout_s);
    while (absl::Now() < give_up) {
      const std::string text = output();
      std::smatch m;
      if (std::regex_search(text, m, serving)) {
        grpc_port_ = std::stoi(m[1]);
        http_port_ = std::stoi(m[2]);
        internal_port_ = std::stoi(m[3]);
      }
      if (std::regex_search(text, m, ready)) {
        num_pages_ = std::stoi(m[1]);
        sliding_per_page_ = std::stoi(m[2]);
        full_per_page_ = std::stoi(m[3]);
        block_size_ = std::stoi(m[4]);
        max_model_len_ = std::stoi(m[5]);
        return grpc_port_ > 0 && http_port_ > 0;
      }
      if (child_->Wait(absl::Milliseconds(20)).has_value()) return false;  // it exited
    }
    return false;
  }

  // The server's pid (−1 before Start).
  pid_t pid() const { return child_ ? child_->pid() : -1; }

  // The pids of the server's direct children (its workers).
  std::vector<pid_t> Children() const {
    return child_ ? ChildrenOf(child_->pid()) : std::vector<pid_t>();
  }

  // The pid of the server's worker of `rank`, or 0.
  pid_t WorkerPid(int rank) const {
    for (pid_t pid : Children()) {
      const std::vector<std::string> args = CommandLineOf(pid);
      const auto flag = std::find(args.begin(), args.end(), "--rank");
      if (flag != args.end() && flag + 1 != args.end() && *(flag + 1) == std::to_string(rank)) {
        return pid;
      }
    }
    return 0;
  }

  // Sends SIGTERM to the server alone (not its group): the drain path.
  void Terminate() const {
    if (child_) child_->Signal(SIGTERM);
  }

  // Waits up to timeout_s for the server to exit; its exit code, or nullopt if it is still
  // running or a signal ended it.
  std::optional<int> WaitExit(double timeout_s) {
    if (!child_) return std::nullopt;
    const std::optional<ExitStatus> status = child_->Wait(absl::Seconds(timeout_s));
    if (!status.has_value() || status->signal != 0) return std::nullopt;
    return status->exit_code;
  }

  // SIGTERM, up to 10 s to drain and exit, then SIGKILL to the whole group; reaps everything.
  void Stop() {
    if (!child_) return;
    Terminate();
    child_->Wait(absl::Seconds(10));
    child_->Kill();
  }

  std::string output() const { return child_ ? child_->output() : ""; }
  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  int internal_port() const { return internal_port_; }
  int num_pages() const { return num_pages_; }
  // Blocks of each KV group one page holds.
  int sliding_per_page() const { return sliding_per_page_; }
  int full_per_page() const { return full_per_page_; }
  int block_size() const { return block_size_; }
  int max_model_len() const { return max_model_len_; }

 private:
  std::unique_ptr<ChildProcess> child_;
  int grpc_port_ = 0;
  int http_port_ = 0;
  int internal_port_ = 0;
  int num_pages_ = 0;
  int sliding_per_page_ = 0;
  int full_per_page_ = 0;
  int block_size_ = 0;
  int max_model_len_ = 0;
};

}  // namespace gemmaserve::testing
