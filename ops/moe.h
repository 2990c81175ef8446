// The routed experts of a mixture-of-experts layer as four steps (GEMMA4.md §2.7), each one op:
//   route     TopKRouting (routing.h): expert ids and weights per token;
//   dispatch  MoeDispatch + GatherRows (copy.h): the tokens routed to this rank's experts, grouped
//             by expert;
//   compute   GroupedLinear, GeluTanhGate (activation.h), GroupedLinear: each expert's MLP on its
//             group of rows;
//   combine   MoeCombine: each token's expert outputs summed with their routing weights.
// With expert parallelism a rank holds some experts (`local_expert` maps a global expert id to its
// index in the rank's stacked weights, −1 when another rank holds it); the partial sums of all
// ranks are added by an all-reduce afterwards.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace gemmaserve::ops {

// Expert l's matrix of a stacked [L, ...] weight (any layout linear.h knows), and the input and
// output features of the stack's experts.
Tensor ExpertMatrix(const Tensor& stacked, int64_t l);
int64_t ExpertInFeatures(const Tensor& stacked);
int64_t ExpertOutFeatures(const Tensor& stacked);

// Groups a step's routed (token, choice) pairs by local expert. expert_ids: [T, k] i32;
// local_expert: [E] i32. Fills, with N the number of pairs routed to local experts:
//   dispatched_tokens [≥ T·k] i32: rows [0, N) hold the token of each dispatched row, grouped by
//     local expert in ascending order, tokens ascending within a group;
//   dispatched_rows [T·k] i32: the dispatched row of pair (t, j) at t·k + j, −1 when its expert is
//     not local;
//   expert_offsets [L + 1] i32: local expert l's rows are [offsets[l], offsets[l + 1]);
// and adds every pair (local or not) to expert_counts [E] i64, the tokens routed to each expert.
// Returns N (known on the host, to size what follows).
int64_t MoeDispatch(const Tensor& expert_ids, const Tensor& local_expert, Tensor& dispatched_tokens,
                    Tensor& dispatched_rows, Tensor& expert_offsets, Tensor& expert_counts);

// y[offsets[l] : offsets[l+1]] = Linear(x[offsets[l] : offsets[l+1]], w[l]) for every local expert
// l. x: [N, in] f32; w: [L, out, in] stacked Linear weights (each packed or row-major, linear.h);
// expert_offsets: [L + 1] i32 with offsets[L] = N; y: [N, out] f32.
void GroupedLinear(const Tensor& x, const Tensor& w, const Tensor& expert_offsets, Tensor& y);

// out[t] = Σ_j weights[t, j] · y[dispatched_rows[t·k + j]] over the choices j of token t whose
// expert is local, added in ascending expert id (so the sum does not depend on the routing order),
// starting from 0. y: [N, hidden] f32; expert_ids: [T, k] i32; weights: [T, k] f32;
// dispatched_rows: [T·k] i32; out: [T, hidden] f32.
void MoeCombine(const Tensor& y, const Tensor& expert_ids, const Tensor& weights,
                const Tensor& dispatched_rows, Tensor& out);

}  // namespace gemmaserve::ops
