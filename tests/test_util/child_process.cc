#include "tests/test_util/child_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace gemmaserve::testing {
namespace {

// This process's environment with `options`' changes, as execve takes it.
std::vector<std::string> ChildEnvironment(const ChildOptions& options) {
  absl::flat_hash_map<std::string, std::string> env;
  std::vector<std::string> order;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const size_t eq = text.find('=');
    if (eq == std::string::npos) continue;
    const std::string name = text.substr(0, eq);
    if (env.emplace(name, text.substr(eq + 1)).second) order.push_back(name);
  }
  for (const auto& [name, value] : options.set_env) {
    if (env.insert_or_assign(name, value).second) order.push_back(name);
  }
  for (const std::string& name : options.unset_env) env.erase(name);
  std::vector<std::string> result;
  for (const std::string& name : order) {
    if (auto it = env.find(name); it != env.end()) result.push_back(name + "=" + it->second);
  }
  return result;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// A file holding `data`, positioned at its start: the child's stdin. Unlike a pipe it never
// blocks the writer or raises SIGPIPE when the child does not read it.
int StdinFile(const std::string& data) {
  const int fd = memfd_create("child-stdin", MFD_CLOEXEC);
  if (fd < 0) return -1;
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      close(fd);
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  lseek(fd, 0, SEEK_SET);
  return fd;
}

ExitStatus StatusOf(int wait_status) {
  ExitStatus status;
  if (WIFEXITED(wait_status)) status.exit_code = WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) status.signal = WTERMSIG(wait_status);
  return status;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const ChildOptions& options) {
  if (argv.empty()) return absl::InvalidArgumentError("no command given");
  // Everything the child needs is prepared here: after fork only async-signal-safe calls.
  std::vector<std::string> args = argv;
  std::vector<std::string> env = ChildEnvironment(options);
  std::vector<char*> arg_pointers = Pointers(args);
  std::vector<char*> env_pointers = Pointers(env);
  rlimit open_files{};
  if (options.max_open_files) {
    open_files.rlim_cur = open_files.rlim_max = static_cast<rlim_t>(*options.max_open_files);
  }
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  const int in = StdinFile(options.stdin_data);
  if (in < 0) {
    close(out[0]);
    close(out[1]);
    return absl::InternalError(absl::StrCat("stdin file: ", strerror(errno)));
  }
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  child->pid_ = fork();
  if (child->pid_ == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test leaves nothing running
    dup2(in, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    if (options.capture_stderr) dup2(out[1], STDERR_FILENO);
    if (options.max_open_files && setrlimit(RLIMIT_NOFILE, &open_files) != 0) _exit(126);
    execve(arg_pointers[0], arg_pointers.data(), env_pointers.data());
    _exit(127);
  }
  close(in);
  close(out[1]);
  if (child->pid_ < 0) {
    close(out[0]);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  setpgid(child->pid_, child->pid_);  // also here, so the group exists before any kill
  child->reader_ = std::thread([raw = child.get(), fd = out[0]] { raw->ReadOutput(fd); });
  return child;
}

ChildProcess::~ChildProcess() { Kill(); }

void ChildProcess::ReadOutput(int fd) {
  char buffer[4096];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    absl::MutexLock lock(&mu_);
    output_.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
}

std::string ChildProcess::output() const {
  absl::MutexLock lock(&mu_);
  return output_;
}

std::optional<ExitStatus> ChildProcess::Wait(absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  while (pid_ > 0 && !status_.has_value()) {
    int wait_status = 0;
    if (waitpid(pid_, &wait_status, WNOHANG) == pid_) {
      status_ = StatusOf(wait_status);
      break;
    }
    if (absl::Now() >= give_up) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return status_;
}

void ChildProcess::Signal(int signal) {
  if (pid_ > 0 && !status_.has_value()) kill(pid_, signal);
}

ExitStatus ChildProcess::Kill() {
  if (!killed_ && pid_ > 0) {
    killed_ = true;
    kill(-pid_, SIGKILL);
    if (!status_.has_value()) {
      int wait_status = 0;
      waitpid(pid_, &wait_status, 0);
      status_ = StatusOf(wait_status);
    }
    if (reader_.joinable()) reader_.join();
  }
  return status_.value_or(ExitStatus());
}

ProcessResult RunProcess(const std::vector<std::string>& argv, absl::Duration timeout,
                         const ChildOptions& options) {
  ProcessResult result;
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(argv, options);
  if (!child.ok()) {
    result.output = child.status().ToString();
    return result;
  }
  result.timed_out = !(*child)->Wait(timeout).has_value();
  const ExitStatus status = (*child)->Kill();
  result.exit_code = status.exit_code;
  result.signal = status.signal;
  result.output = (*child)->output();
  result.elapsed_s = absl::ToDoubleSeconds(absl::Now() - start);
  return result;
}

std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return children;
  while (dirent* entry = readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
    if (pid <= 0) continue;
    std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
    std::string line;
    if (!std::getline(stat, line)) continue;
    // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
    const size_t close = line.rfind(')');
    char state = 0;
    int ppid = -1;
    if (close == std::string::npos ||
        std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) != 2) {
      continue;
    }
    if (ppid == parent && state != 'Z') children.push_back(pid);
  }
  closedir(proc);
  return children;
}

bool IsRunning(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

std::vector<std::string> CommandLineOf(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) return {};
  // NUL-separated, with a NUL after the last argument.
  std::vector<std::string> args = absl::StrSplit(text.substr(0, text.size() - 1), '\0');
  return args;
}

}  // namespace gemmaserve::testing
