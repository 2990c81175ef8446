#include "tools/flags.h"

#include <cstdio>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace gemmaserve::tools {

FlagSet::FlagSet(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void FlagSet::Add(Flag flag) { flags_.push_back(std::move(flag)); }

FlagSet::Flag* FlagSet::Find(const std::string& name) {
  for (Flag& flag : flags_) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

bool FlagSet::IsSet(const std::string& name) const {
  for (const Flag& flag : flags_) {
    if (flag.name == name) return flag.seen;
  }
  return false;
}

void FlagSet::String(std::string name, std::string* target, std::string help, bool required) {
  Flag flag{name, std::move(help), *target, false, required, false, nullptr};
  flag.set = [target](const std::string& value) {
    *target = value;
    return absl::OkStatus();
  };
  Add(std::move(flag));
}

void FlagSet::Int(std::string name, int64_t* target, std::string help, bool required) {
  Flag flag{name, std::move(help), absl::StrCat(*target), false, required, false, nullptr};
  flag.set = [target, name](const std::string& value) {
    if (!absl::SimpleAtoi(value, target)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": \"", value, "\" is not an integer"));
    }
    return absl::OkStatus();
  };
  Add(std::move(flag));
}

void FlagSet::Double(std::string name, double* target, std::string help, bool required) {
  Flag flag{name, std::move(help), absl::StrCat(*target), false, required, false, nullptr};
  flag.set = [target, name](const std::string& value) {
    if (!absl::SimpleAtod(value, target)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": \"", value, "\" is not a number"));
    }
    return absl::OkStatus();
  };
  Add(std::move(flag));
}

void FlagSet::Bool(std::string name, bool* target, std::string help) {
  Flag flag{name, std::move(help), *target ? "true" : "false", true, false, false, nullptr};
  flag.set = [target, name](const std::string& value) {
    if (value.empty() || value == "true" || value == "1") {
      *target = true;
    } else if (value == "false" || value == "0") {
      *target = false;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": \"", value, "\" is not true or false"));
    }
    return absl::OkStatus();
  };
  Add(std::move(flag));
}

void FlagSet::StringList(std::string name, std::vector<std::string>* target, std::string help) {
  Flag flag{name, std::move(help), "", false, false, false, nullptr};
  flag.set = [target](const std::string& value) {
    target->push_back(value);
    return absl::OkStatus();
  };
  Add(std::move(flag));
}

void FlagSet::IntList(std::string name, std::vector<int64_t>* target, std::string help,
                      bool required) {
  Flag flag{name, std::move(help), "", false, required, false, nullptr};
  flag.set = [target, name](const std::string& value) {
    target->clear();
    for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
      int64_t parsed;
      if (!absl::SimpleAtoi(part, &parsed)) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, ": \"", part,
                                                       "\" is not an integer (expected a "
                                                       "comma-separated list such as 2,17,40)"));
      }
      target->push_back(parsed);
    }
    return absl::OkStatus();
  };
  Add(std::move(flag));
}

absl::Status FlagSet::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_requested_ = true;
      return absl::OkStatus();
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(command_, ": unexpected argument \"", arg, "\""));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(command_, ": unknown flag --", name,
                                                     " (see gemmaserve ", command_, " --help)"));
    }
    if (!has_value && !flag->is_switch) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = argv[++i];
    }
    if (absl::Status status = flag->set(value); !status.ok()) return status;
    flag->seen = true;
  }
  for (const Flag& flag : flags_) {
    if (flag.required && !flag.seen) {
      return absl::InvalidArgumentError(
          absl::StrCat(command_, ": --", flag.name, " is required"));
    }
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string usage = absl::StrCat("usage: gemmaserve ", command_, " [flags]\n", summary_, "\n\n");
  for (const Flag& flag : flags_) {
    absl::StrAppend(&usage, "  --", flag.name, flag.is_switch ? "" : " VALUE", "\n      ",
                    flag.help);
    if (flag.required) {
      absl::StrAppend(&usage, " (required)");
    } else if (!flag.default_text.empty() && !flag.is_switch &&
               flag.help.find("(default") == std::string::npos) {
      absl::StrAppend(&usage, " (default ", flag.default_text, ")");
    }
    absl::StrAppend(&usage, "\n");
  }
  return usage;
}

int RunCommand(const FlagSet& flags, const absl::Status& parse_status,
               const std::function<absl::Status()>& body) {
  if (!parse_status.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(parse_status.message()).c_str());
    return 2;
  }
  if (flags.help_requested()) {
    std::fputs(flags.Usage().c_str(), stdout);
    return 0;
  }
  const absl::Status status = body();
  if (!status.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

}  // namespace gemmaserve::tools
