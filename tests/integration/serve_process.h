// ServeProcess: a real `gemmaserve serve` as a child process for the integration tests. It runs in
// its own process group with stdout and stderr captured by a reader thread (so the server never
// blocks on a full pipe); Start parses the ports from the "serving ..." log line and waits for
// "ready: N KV blocks ...". Stop (and the destructor) sends SIGTERM, waits, then SIGKILLs the
// whole group and reaps it, so no test leaves a server or worker behind. Test-only.
//
// Thread-safety: output() and the accessors may be called from any thread; Start, Terminate,
// WaitExit and Stop from the owning thread only.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

namespace gemmaserve::testing {

class ServeProcess {
 public:
  ServeProcess() = default;
  ~ServeProcess() { Stop(); }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // Starts `gemmaserve serve` on the tiny MoE model with EP 2, every port 0, worker metrics off,
  // plus `extra_flags`; false (with output() telling why) unless it is ready within timeout_s.
  bool Start(const std::vector<std::string>& extra_flags, double timeout_s = 120) {
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
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return false;
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test leaves no server behind
      dup2(fds[1], STDOUT_FILENO);
      dup2(fds[1], STDERR_FILENO);
      execv(args[0], args.data());
      _exit(127);
    }
    close(fds[1]);
    setpgid(pid_, pid_);
    reader_ = std::thread([this, fd = fds[0]] { ReadOutput(fd); });

    const std::regex serving(R"(gRPC :(\d+), HTTP :(\d+))");
    const std::regex ready(R"(ready: (\d+) KV blocks of (\d+) tokens per group, max model length (\d+))");
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < give_up) {
      const std::string text = output();
      std::smatch m;
      if (std::regex_search(text, m, serving)) {
        grpc_port_ = std::stoi(m[1]);
        http_port_ = std::stoi(m[2]);
      }
      if (std::regex_search(text, m, ready)) {
        num_blocks_ = std::stoi(m[1]);
        block_size_ = std::stoi(m[2]);
        max_model_len_ = std::stoi(m[3]);
        return grpc_port_ > 0 && http_port_ > 0;
      }
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // The pids of the server's direct children (its workers), from /proc.
  std::vector<pid_t> Children() const {
    std::vector<pid_t> children;
    DIR* proc = opendir("/proc");
    if (proc == nullptr) return children;
    while (dirent* entry = readdir(proc)) {
      const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
      if (pid > 0 && ParentOf(pid) == pid_) children.push_back(pid);
    }
    closedir(proc);
    return children;
  }

  // Sends SIGTERM to the server alone (not its group): the drain path.
  void Terminate() const {
    if (pid_ > 0 && !exited_) kill(pid_, SIGTERM);
  }

  // Waits up to timeout_s for the server to exit; its exit code, or nullopt if it is still
  // running or a signal ended it.
  std::optional<int> WaitExit(double timeout_s) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (!exited_) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
        break;
      }
      if (std::chrono::steady_clock::now() > give_up) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!WIFEXITED(status_)) return std::nullopt;
    return WEXITSTATUS(status_);
  }

  // SIGTERM, up to 10 s to drain and exit, then SIGKILL to the whole group; reaps everything.
  void Stop() {
    if (pid_ <= 0) return;
    Terminate();
    if (!WaitExit(10).has_value() && !exited_) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
      exited_ = true;
    }
    kill(-pid_, SIGKILL);  // workers left in the group, if any
    if (reader_.joinable()) reader_.join();
    pid_ = -1;
  }

  std::string output() const {
    std::lock_guard<std::mutex> lock(mu_);
    return output_;
  }
  pid_t pid() const { return pid_; }
  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  int max_model_len() const { return max_model_len_; }

 private:
  static pid_t ParentOf(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return -1;
    // "pid (comm) state ppid ...": comm may hold spaces, so start after the last ')'.
    const size_t close = line.rfind(')');
    if (close == std::string::npos) return -1;
    char state = 0;
    int ppid = -1;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) != 2) return -1;
    return state == 'Z' ? -1 : ppid;
  }

  // Until every writer (server and workers) has closed the pipe.
  void ReadOutput(int fd) {
    char buffer[4096];
    while (true) {
      const ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n <= 0) break;
      std::lock_guard<std::mutex> lock(mu_);
      output_.append(buffer, static_cast<size_t>(n));
    }
    close(fd);
  }

  pid_t pid_ = -1;
  int status_ = 0;
  bool exited_ = false;
  std::thread reader_;
  int grpc_port_ = 0;
  int http_port_ = 0;
  int num_blocks_ = 0;
  int block_size_ = 0;
  int max_model_len_ = 0;

  mutable std::mutex mu_;
  std::string output_;  // guarded by mu_
};

}  // namespace gemmaserve::testing
