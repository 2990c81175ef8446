// MoE dispatch's counting sort (ops/moe.h: MoeDispatch), shared by the CPU op and the CUDA kernel
// (which runs it on one thread), so that both give the same rows in the same order.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace gemmaserve::moe_dispatch {

// The (token, choice) pairs `ids` [num_pairs = tokens · k] sorted by local expert (local[id], −1
// for another rank's): counts[id] += 1 for every pair; offsets [num_local + 1] the groups'
// bounds; tokens[row] the token of each dispatched row, groups in local-expert order and pairs in
// token order within a group; rows[pair] its row, or −1. The ids must be valid (the caller checks).
template <typename Count>
GS_HOST_DEVICE inline void SortByLocalExpert(const int32_t* ids, const int32_t* local,
                                             int64_t num_pairs, int64_t k, int64_t num_local,
                                             int32_t* tokens, int32_t* rows, int32_t* offsets,
                                             Count* counts) {
  // Sizes, then offsets, then each pair in token order.
  for (int64_t l = 0; l <= num_local; ++l) offsets[l] = 0;
  for (int64_t i = 0; i < num_pairs; ++i) {
    counts[ids[i]] += 1;
    const int32_t l = local[ids[i]];
    if (l >= 0) ++offsets[l + 1];
  }
  for (int64_t l = 0; l < num_local; ++l) offsets[l + 1] += offsets[l];
  // offsets[l] serves as group l's write cursor, then is restored from the next group's start.
  for (int64_t i = 0; i < num_pairs; ++i) {
    const int32_t l = local[ids[i]];
    if (l < 0) {
      rows[i] = -1;
      continue;
    }
    const int32_t row = offsets[l]++;
    tokens[row] = static_cast<int32_t>(i / k);
    rows[i] = row;
  }
  for (int64_t l = num_local; l > 0; --l) offsets[l] = offsets[l - 1];
  offsets[0] = 0;
}

}  // namespace gemmaserve::moe_dispatch
