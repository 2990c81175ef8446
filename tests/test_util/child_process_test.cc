#include "tests/test_util/child_process.h"

#include <signal.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::testing {
namespace {

using ::testing::HasSubstr;

// Polls `condition` for up to 30 s: a real process takes its own time to get somewhere.
template <typename Condition>
bool Eventually(Condition condition) {
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!condition()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

ProcessResult Shell(const std::string& script, const ChildOptions& options = {},
                    absl::Duration timeout = absl::Seconds(30)) {
  return RunProcess({"/bin/sh", "-c", script}, timeout, options);
}

TEST(ChildProcessTest, RunProcessCapturesStdoutAndStderrAndTheExitCode) {
  const ProcessResult run = Shell("echo out; echo err >&2; exit 3");
  EXPECT_FALSE(run.timed_out);
  EXPECT_EQ(run.exit_code, 3);
  EXPECT_EQ(run.signal, 0);
  EXPECT_EQ(run.output, "out\nerr\n");
}

TEST(ChildProcessTest, StderrCanBeLeftOut) {
  ChildOptions options;
  options.capture_stderr = false;
  EXPECT_EQ(Shell("echo out; echo err >&2", options).output, "out\n");
}

TEST(ChildProcessTest, StdinAndEnvironmentAreTheOnesGiven) {
  setenv("CHILD_PROCESS_TEST_UNSET", "x", 1);
  ChildOptions options;
  options.stdin_data = "line one\nline two\n";
  options.set_env = {{"CHILD_PROCESS_TEST_SET", "hello"}};
  options.unset_env = {"CHILD_PROCESS_TEST_UNSET"};
  const ProcessResult run =
      Shell("wc -l; echo \"$CHILD_PROCESS_TEST_SET ${CHILD_PROCESS_TEST_UNSET-gone}\"", options);
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("2\nhello gone\n"));
  // Without stdin_data the child reads end-of-file at once.
  EXPECT_EQ(Shell("cat; echo done").output, "done\n");
}

TEST(ChildProcessTest, OpenFileLimitIsSetInTheChild) {
  ChildOptions options;
  options.max_open_files = 123;
  const ProcessResult run = Shell("ulimit -n; ulimit -Hn", options);
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(run.output, "123\n123\n");
}

TEST(ChildProcessTest, TimeoutKillsTheWholeGroup) {
  // The shell leaves a grandchild holding the output pipe; killing the group ends both.
  const ProcessResult run = Shell("sleep 60 & echo started; wait", {}, absl::Milliseconds(300));
  EXPECT_TRUE(run.timed_out);
  EXPECT_EQ(run.signal, SIGKILL);
  EXPECT_EQ(run.output, "started\n");
  EXPECT_LT(run.elapsed_s, 30);
}

TEST(ChildProcessTest, SignalReachesTheChildAndWaitReportsIt) {
  auto child = ChildProcess::Start({"/bin/sh", "-c", "echo ready; exec sleep 60"});
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE(Eventually([&] { return (*child)->output() == "ready\n"; }));
  EXPECT_FALSE((*child)->Wait(absl::ZeroDuration()).has_value());
  (*child)->Signal(SIGTERM);
  const std::optional<ExitStatus> status = (*child)->Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->signal, SIGTERM);
  (*child)->Kill();
  EXPECT_EQ((*child)->output(), "ready\n");
}

TEST(ChildProcessTest, AMissingProgramExitsWith127) {
  EXPECT_EQ(RunProcess({"/nonexistent/program"}, absl::Seconds(30)).exit_code, 127);
}

TEST(ChildProcessTest, ChildrenOfAndCommandLineOfSeeARunningChild) {
  auto child = ChildProcess::Start({"/bin/sleep", "60"});
  ASSERT_TRUE(child.ok()) << child.status();
  const std::vector<std::string> args = {"/bin/sleep", "60"};
  EXPECT_TRUE(Eventually([&] { return CommandLineOf((*child)->pid()) == args; }));  // exec'd
  EXPECT_THAT(ChildrenOf(getpid()), ::testing::Contains((*child)->pid()));
  (*child)->Kill();
  EXPECT_THAT(ChildrenOf(getpid()), ::testing::Not(::testing::Contains((*child)->pid())));
}

}  // namespace
}  // namespace gemmaserve::testing
