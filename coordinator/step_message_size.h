// Bounds on the serialized size of the step stream's messages (gemmaserve.internal.v1 StepPlan
// and StepResult). The coordinator and its workers set their gRPC message limits from them, so
// gRPC never cuts off a step the scheduler can build or a result it can ask for: a message over
// the limit would break the stream, and with it the whole replica. A step whose plan or result
// still exceeds the limit is refused with an error naming both sizes (WorkerGroup::Step, and the
// worker for results), or split (SequenceDriver asks for logits in row chunks that fit).
//
// The bounds count protobuf's worst case: 5 bytes per non-negative int32, 10 per negative one (the
// −1 entries of sliding block tables), field tags and lengths of every submessage.
#pragma once

#include <cstdint>

namespace gemmaserve::coordinator {

// The limit of a replica that was not sized for serving (the logits and run tools, tests): room
// for 63 rows of logits over a 262,144-token vocabulary.
inline constexpr int64_t kDefaultMaxStepMessageBytes = int64_t{64} << 20;
// gRPC's floor (its own default) and ceiling (sizes are ints).
inline constexpr int64_t kMinStepMessageBytes = int64_t{4} << 20;
inline constexpr int64_t kMaxStepMessageBytes = (int64_t{1} << 31) - 1;

// What bounds a serving step's messages; each field as in SchedulerOptions / the API's limits.
struct StepShape {
  int64_t max_num_seqs = 256;
  int64_t max_tokens_per_step = 2048;
  int64_t max_model_len = 8192;
  int64_t block_size = 16;
  int64_t max_top_logprobs = 20;  // alternatives per position (the API's cap)
  int64_t num_layers = 0;         // MoE models: StepResult carries per-layer expert counts
  int64_t num_experts = 0;
};

// The largest StepPlan the scheduler can build: every token of a step, and for each sequence in
// it its block tables and, with penalties, its whole history (prompt and output).
int64_t MaxPlanBytes(const StepShape& shape);
// The largest serving StepResult: per sequence a sampled token with its logprob and alternatives,
// prompt logprobs (with alternatives) for every token of the step, and the expert counts.
int64_t MaxResultBytes(const StepShape& shape);
// The message limit for a replica serving `shape`: the larger bound with a quarter of headroom,
// within [kMinStepMessageBytes, kMaxStepMessageBytes].
int64_t StepMessageLimit(const StepShape& shape);

// Rows of `vocab_size` f32 logits one StepResult may carry under `max_message_bytes`, leaving
// room for everything else in it; at least 1.
int64_t MaxLogitsRowsPerStep(int64_t max_message_bytes, int64_t vocab_size);

}  // namespace gemmaserve::coordinator
