// --tp and --ep, as every command that runs the model takes them (serve, coordinator, run,
// logits, bench-model), and the check of the layout they ask for against the model, done before
// any worker starts.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "parallel/parallel_layout.h"
#include "tools/flags.h"

namespace gemmaserve::tools {

struct ParallelFlags {
  int64_t tp = 1;
  int64_t ep = 1;

  // Declares --tp and --ep.
  void AddFlags(FlagSet& flags);
  // The layout the flags ask for, if the model in `model_dir` (with `config`) can take it: --ep
  // needs a MoE model, and every weight the layout splits must split evenly (the error names the
  // first one that does not).
  absl::StatusOr<parallel::ParallelLayout> Resolve(const model::Gemma4Config& config,
                                                   const std::string& model_dir) const;
};

// Before `workers` worker processes of `threads` compute threads each start on this machine: when
// that is more threads than the cores this process may run on, warns, and has the workers'
// OpenMP threads wait passively (OMP_WAIT_POLICY=passive in the environment they inherit, unless
// it is set already). Spinning threads hold the cores the other ranks need: the tiny MoE at EP 2
// with 2 threads a worker on 2 cores took 162 ms a token spinning, 8–12 ms waiting passively.
void PrepareLocalWorkerThreads(int64_t workers, int64_t threads);

}  // namespace gemmaserve::tools
