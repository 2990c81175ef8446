// gemmaserve: one binary, one subcommand per job (see DESIGN.md, "Processes, commands and ports").
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/commands.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*main)(int argc, char** argv);
};

constexpr Command kCommands[] = {
    {"serve", "serve a model: coordinator plus local workers", gemmaserve::tools::ServeMain},
    {"coordinator", "serve a model with workers started elsewhere", gemmaserve::tools::CoordinatorMain},
    {"worker", "run one rank of a replica, driven by a coordinator", gemmaserve::tools::WorkerMain},
    {"run", "generate tokens from a prompt in this process", gemmaserve::tools::RunMain},
    {"logits", "print the logits of a token sequence as JSON", gemmaserve::tools::LogitsMain},
    {"gen-checkpoint", "write a random-weight Gemma 4 checkpoint",
     gemmaserve::tools::GenCheckpointMain},
    {"bench-model", "prefill/decode tokens/s of the CPU forward vs memory bandwidth",
     gemmaserve::tools::BenchModelMain},
    {"tokenize", "print the token ids of UTF-8 text read from stdin",
     gemmaserve::tools::TokenizeMain},
    {"detokenize", "print the text of token ids read from stdin",
     gemmaserve::tools::DetokenizeMain},
    {"generate", "stream a completion from a server (gRPC)", gemmaserve::tools::GenerateMain},
    {"chat", "stream a chat answer from a server (gRPC)", gemmaserve::tools::ChatMain},
    {"bench", "load a server: request/s, tokens/s, TTFT and inter-token latency",
     gemmaserve::tools::BenchMain},
};

void PrintUsage(FILE* out) {
  std::fprintf(out, "usage: gemmaserve COMMAND [flags]   (gemmaserve COMMAND --help for flags)\n\n");
  for (const Command& command : kCommands) {
    std::fprintf(out, "  %-16s %s\n", command.name, command.summary);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    PrintUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const Command& command : kCommands) {
    if (std::strcmp(argv[1], command.name) == 0) return command.main(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "error: unknown command \"%s\"\n\n", argv[1]);
  PrintUsage(stderr);
  return 2;
}
