// Flags of one `gemmaserve` subcommand: each command declares its options into a FlagSet bound to
// the fields of its config struct, then parses its own argv once. Unknown flags, missing values
// and malformed numbers are INVALID_ARGUMENT naming the flag; `--help` prints the usage.
//
//   RunConfig config;
//   FlagSet flags("run", "Generate tokens from a prompt in this process.");
//   flags.String("model", &config.model_dir, "checkpoint directory", /*required=*/true);
//   flags.Int("max-tokens", &config.max_tokens, "number of tokens to generate");
//   flags.Bool("json", &config.json, "print one JSON object");
//   RETURN_IF_ERROR(flags.Parse(argc, argv));  // argv[0] is the command name
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace gemmaserve::tools {

class FlagSet {
 public:
  FlagSet(std::string command, std::string summary);

  void String(std::string name, std::string* target, std::string help, bool required = false);
  void Int(std::string name, int64_t* target, std::string help, bool required = false);
  void Double(std::string name, double* target, std::string help, bool required = false);
  // A switch: present means true. `--name=false` is also accepted.
  void Bool(std::string name, bool* target, std::string help);
  // Repeatable: each occurrence appends its value (--api-key A --api-key B).
  void StringList(std::string name, std::vector<std::string>* target, std::string help);
  // Comma-separated integers: --prompt-ids 2,17,40
  void IntList(std::string name, std::vector<int64_t>* target, std::string help,
               bool required = false);

  // Accepts `--name value` and `--name=value`. Returns a status whose message is printable as is;
  // help_requested() tells a `--help` apart from an error.
  absl::Status Parse(int argc, char** argv);
  bool help_requested() const { return help_requested_; }
  // Whether the flag appeared on the command line.
  bool IsSet(const std::string& name) const;
  std::string Usage() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string default_text;
    bool is_switch = false;
    bool required = false;
    bool seen = false;
    std::function<absl::Status(const std::string&)> set;
  };
  void Add(Flag flag);
  Flag* Find(const std::string& name);

  std::string command_;
  std::string summary_;
  std::vector<Flag> flags_;
  bool help_requested_ = false;
};

// Runs a command body that returns a status: prints usage on --help (exit 0), prints the error on
// failure (exit 1 for runtime errors, 2 for usage errors) and returns the process exit code.
int RunCommand(const FlagSet& flags, const absl::Status& parse_status,
               const std::function<absl::Status()>& body);

}  // namespace gemmaserve::tools
