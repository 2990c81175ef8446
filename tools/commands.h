// The subcommands of the `gemmaserve` binary. Each takes its own argv (argv[0] is the command
// name) and returns the process exit code: 0 success, 1 runtime error, 2 usage error.
#pragma once

namespace gemmaserve::tools {

int RunMain(int argc, char** argv);            // run_command.cc
int LogitsMain(int argc, char** argv);         // run_command.cc
int GenCheckpointMain(int argc, char** argv);  // gen_checkpoint_command.cc
int BenchModelMain(int argc, char** argv);     // bench_model_command.cc
int WorkerMain(int argc, char** argv);         // worker_command.cc
int ServeMain(int argc, char** argv);          // serve_command.cc
int CoordinatorMain(int argc, char** argv);    // serve_command.cc
int TokenizeMain(int argc, char** argv);       // tokenize_command.cc
int DetokenizeMain(int argc, char** argv);     // tokenize_command.cc
int GenerateMain(int argc, char** argv);       // client_commands.cc
int ChatMain(int argc, char** argv);           // client_commands.cc
int BenchMain(int argc, char** argv);          // bench_command.cc

}  // namespace gemmaserve::tools
