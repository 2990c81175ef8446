// Helpers shared by the cluster tests: running a command as a child process with a hard deadline,
// and a port nothing listens on. Test-only.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>


namespace gemmaserve::testing {

struct ProcessResult {
  bool timed_out = false;  // killed (with its process group) at the deadline
  int exit_code = -1;      // when it exited normally
  int signal = 0;          // when a signal ended it
  std::string output;      // stdout and stderr, interleaved
  double elapsed_s = 0;
};

// Runs argv (argv[0] a path) in its own process group with stdout and stderr captured, and kills
// the whole group if it outlives `timeout_s`. Children the process leaves behind are killed too.
inline ProcessResult RunProcess(const std::vector<std::string>& argv, double timeout_s) {
  ProcessResult result;
  const auto start = std::chrono::steady_clock::now();
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return result;
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  setpgid(pid, pid);  // also here, so the group exists before any kill below
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  // Read until every writer (the process and anything it spawned) has closed the pipe.
  char buffer[4096];
  while (true) {
    const double left_s = timeout_s - elapsed();
    if (left_s <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left_s * 1000) + 1) <= 0) continue;
    const ssize_t n = read(fds[0], buffer, sizeof(buffer));
    if (n <= 0) break;
    result.output.append(buffer, static_cast<size_t>(n));
  }
  if (result.timed_out) kill(-pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  kill(-pid, SIGKILL);  // stragglers of the group, if any; harmless when it is gone
  close(fds[0]);
  result.elapsed_s = elapsed();
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

// A TCP port on 127.0.0.1 that was free a moment ago and has no listener now.
inline int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

}  // namespace gemmaserve::testing
