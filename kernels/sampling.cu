#include "kernels/sampling.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cub/block/block_reduce.cuh>
#include <cstring>

#include "kernels/cuda_util.h"

namespace gemmaserve::kernels {
namespace {

using sampling::PenaltyEntry;
using sampling::RowPlan;

constexpr int kThreads = 512;

using BlockReduceFloat = cub::BlockReduce<float, kThreads>;
using BlockReduceIndex = cub::BlockReduce<int64_t, kThreads>;
using BlockReduceDouble = cub::BlockReduce<double, kThreads>;

struct Outputs {
  int32_t* token_ids;   // [rows]
  float* logprobs;      // [rows]
  int32_t* top_ids;     // [rows, max_num_top]
  float* top_logprobs;  // [rows, max_num_top]
  int32_t max_num_top;
};

// A block's shared memory.
struct Shared {
  union {
    BlockReduceFloat::TempStorage f;
    BlockReduceIndex::TempStorage index;
    BlockReduceDouble::TempStorage d;
  } reduce;
  uint32_t histogram[256];
  uint32_t keys[kMaxDeviceTopK];  // the selected tokens' order keys, then sorted
  int32_t ids[kMaxDeviceTopK];
  int32_t filled;
  int32_t remaining;  // of the radix select: how many more to take at the current prefix
  int32_t bin;
  int32_t in_bin;
  float max_logit;
  int64_t argmax;
  double log_sum;
};

struct MaxOf {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct MinOf {
  __device__ int64_t operator()(int64_t a, int64_t b) const { return a < b ? a : b; }
};

// Logits as unsigned keys in the order of their values: -0 and +0 one key, NaN below all.
__device__ inline uint32_t OrderKey(float x) {
  if (x != x) return 0;
  const uint32_t bits = __float_as_uint(x == 0.0f ? 0.0f : x);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// TopIds' order: the higher key first, then the lower id.
__device__ inline bool Before(uint32_t key_a, int32_t id_a, uint32_t key_b, int32_t id_b) {
  return key_a > key_b || (key_a == key_b && id_a < id_b);
}

// One 8-bit digit of a radix select over the elements `in` admits: counts their digit at `shift`
// and leaves in s.bin the digit holding the s.remaining-th element, from the top (descending) or
// the bottom, and in s.remaining what is left to take inside that digit.
template <typename Admit, typename Digit>
__device__ void RadixStep(int64_t n, bool descending, Admit admit, Digit digit, Shared& s) {
  for (int b = threadIdx.x; b < 256; b += blockDim.x) s.histogram[b] = 0;
  __syncthreads();
  // Most logits share their top byte: one atomic per digit per warp, not per lane.
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const bool admitted = i < n && admit(i);
    const unsigned lanes = __ballot_sync(0xffffffffu, admitted);
    if (admitted) {
      const uint32_t d = digit(i);
      const unsigned peers = __match_any_sync(lanes, d);
      if (static_cast<int>(threadIdx.x % 32) == __ffs(peers) - 1) {
        atomicAdd(&s.histogram[d], static_cast<uint32_t>(__popc(peers)));
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t passed = 0;
    int bin = 0;
    for (int step = 0; step < 256; ++step) {
      bin = descending ? 255 - step : step;
      const int32_t here = static_cast<int32_t>(s.histogram[bin]);
      if (passed + here >= s.remaining || step == 255) break;
      passed += here;
    }
    s.remaining -= passed;
    s.bin = bin;
    s.in_bin = static_cast<int32_t>(s.histogram[bin]);
  }
  __syncthreads();
}

// The `count` (1 ≤ count ≤ kMaxDeviceTopK) highest of row[0, vocab) into s.ids, highest first,
// ties to the lower id: TopIds' choice and order (ops/sampler.h).
__device__ void SelectTop(const float* row, int64_t vocab, int32_t count, Shared& s) {
  if (threadIdx.x == 0) s.remaining = count;
  __syncthreads();
  // The count-th highest key, a byte at a time from the top.
  uint32_t prefix = 0;
  uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    RadixStep(
        vocab, true, [&](int64_t i) { return (OrderKey(row[i]) & mask) == prefix; },
        [&](int64_t i) { return (OrderKey(row[i]) >> shift) & 255u; }, s);
    prefix |= static_cast<uint32_t>(s.bin) << shift;
    mask |= 255u << shift;
  }
  const uint32_t threshold = prefix;
  // Of the tokens at the threshold, the s.remaining lowest ids: the id of the last one taken.
  int64_t id_limit = INT64_MAX;
  if (s.in_bin > s.remaining) {
    uint32_t id_prefix = 0;
    uint32_t id_mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      RadixStep(
          vocab, false,
          [&](int64_t i) {
            return OrderKey(row[i]) == threshold && (static_cast<uint32_t>(i) & id_mask) == id_prefix;
          },
          [&](int64_t i) { return (static_cast<uint32_t>(i) >> shift) & 255u; }, s);
      id_prefix |= static_cast<uint32_t>(s.bin) << shift;
      id_mask |= 255u << shift;
    }
    id_limit = id_prefix;
  }
  if (threadIdx.x == 0) s.filled = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const uint32_t key = OrderKey(row[i]);
    if (key > threshold || (key == threshold && i <= id_limit)) {
      const int32_t slot = atomicAdd(&s.filled, 1);
      s.keys[slot] = key;
      s.ids[slot] = static_cast<int32_t>(i);
    }
  }
  __syncthreads();
  // Bitonic sort of a power of two of slots, the padding (key 0, id INT_MAX) last.
  int size = 1;
  while (size < count) size *= 2;
  for (int i = count + threadIdx.x; i < size; i += blockDim.x) {
    s.keys[i] = 0;
    s.ids[i] = INT_MAX;
  }
  __syncthreads();
  for (int k = 2; k <= size; k *= 2) {
    for (int j = k / 2; j > 0; j /= 2) {
      for (int i = threadIdx.x; i < size; i += blockDim.x) {
        const int l = i ^ j;
        if (l <= i) continue;
        const bool in_order = (i & k) == 0;
        const bool swap = in_order ? Before(s.keys[l], s.ids[l], s.keys[i], s.ids[i])
                                   : Before(s.keys[i], s.ids[i], s.keys[l], s.ids[l]);
        if (swap) {
          const uint32_t key = s.keys[i];
          s.keys[i] = s.keys[l];
          s.keys[l] = key;
          const int32_t id = s.ids[i];
          s.ids[i] = s.ids[l];
          s.ids[l] = id;
        }
      }
      __syncthreads();
    }
  }
}

// One block per plan: ops::SamplePlanned's steps (ops/sampler.cc) in the same order.
__global__ void __launch_bounds__(kThreads)
    SampleKernel(const float* logits, int64_t vocab, const RowPlan* plans,
                 const PenaltyEntry* penalties, float* scratch, double* chunk_mass, Outputs out) {
  __shared__ Shared s;
  const int64_t r = blockIdx.x;
  const RowPlan plan = plans[r];
  const float* row = logits + plan.row * vocab;
  if (plan.penalty_count > 0) {
    float* copy = scratch + r * vocab;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) copy[i] = row[i];
    __syncthreads();
    for (int32_t e = threadIdx.x; e < plan.penalty_count; e += blockDim.x) {
      const PenaltyEntry entry = penalties[plan.penalty_begin + e];
      copy[entry.token_id] = sampling::Penalize(
          copy[entry.token_id], plan.repetition != 0, plan.repetition_penalty,
          entry.output_count, plan.presence_penalty, plan.frequency_penalty);
    }
    __syncthreads();
    row = copy;
  }

  // The maximum (NaNs skipped: fmaxf returns the other operand) and its first position.
  float max_logit = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) max_logit = fmaxf(max_logit, row[i]);
  max_logit = BlockReduceFloat(s.reduce.f).Reduce(max_logit, MaxOf());
  if (threadIdx.x == 0) s.max_logit = max_logit;
  __syncthreads();
  max_logit = s.max_logit;
  int64_t first = INT64_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    if (row[i] == max_logit) {
      first = i;
      break;
    }
  }
  first = BlockReduceIndex(s.reduce.index).Reduce(first, MinOf());
  if (threadIdx.x == 0) s.argmax = first == INT64_MAX ? 0 : first;
  __syncthreads();

  // log Σ exp(logit · scale − top) + top, for the logprobs (to float rounding of the CPU's).
  const float top = max_logit * plan.scale;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    sum += static_cast<double>(expf(row[i] * plan.scale - top));
  }
  sum = BlockReduceDouble(s.reduce.d).Sum(sum);
  if (threadIdx.x == 0) s.log_sum = static_cast<double>(top) + log(sum);
  __syncthreads();

  int32_t token = static_cast<int32_t>(s.argmax);
  sampling::WeightParams w;
  w.scale = plan.scale;
  if (plan.greedy) {
    // the argmax
  } else if (plan.candidates > 0) {
    SelectTop(row, vocab, plan.candidates, s);
    if (threadIdx.x == 0) {
      w.top = sampling::Mul(row[s.ids[0]], plan.scale);
      w.floor = sampling::Add(w.top, plan.log_min_p);
      token = sampling::DrawFromCandidates(row, s.ids, plan.candidates, w, plan.top_p, plan.draw);
    }
  } else {
    w.top = sampling::Mul(max_logit, plan.scale);
    w.floor = sampling::Add(w.top, plan.log_min_p);
    const int64_t chunks = sampling::NumChunks(vocab);
    double* masses = chunk_mass + r * chunks;
    for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
      const int64_t begin = c * sampling::kChunk;
      const int64_t end = begin + sampling::kChunk < vocab ? begin + sampling::kChunk : vocab;
      masses[c] = sampling::ChunkMass(row, begin, end, w);
    }
    __syncthreads();
    if (threadIdx.x == 0) token = sampling::DrawInIdOrder(row, vocab, masses, w, plan.draw);
  }
  if (threadIdx.x == 0) {
    out.token_ids[r] = token;
    out.logprobs[r] =
        static_cast<float>(static_cast<double>(row[token] * plan.scale) - s.log_sum);
  }
  if (plan.num_top > 0) {
    __syncthreads();  // thread 0 is done with s.ids
    SelectTop(row, vocab, plan.num_top, s);
    for (int32_t j = threadIdx.x; j < plan.num_top; j += blockDim.x) {
      const int32_t id = s.ids[j];
      out.top_ids[r * out.max_num_top + j] = id;
      out.top_logprobs[r * out.max_num_top + j] =
          static_cast<float>(static_cast<double>(row[id] * plan.scale) - s.log_sum);
    }
  }
}

// Byte offsets in the device buffer, each 256-aligned.
struct Layout {
  size_t plans = 0, penalties = 0, scratch = 0, chunk_mass = 0;
  size_t token_ids = 0, logprobs = 0, top_ids = 0, top_logprobs = 0, end = 0;
};

size_t Align(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

DeviceSamples DeviceSampler::Sample(const Tensor& logits, const std::vector<RowPlan>& plans,
                                    const std::vector<PenaltyEntry>& penalties) {
  internal::UseDeviceOf({&logits}, "Sample");
  internal::CheckDType(logits, DType::kF32, "Sample logits");
  CHECK_EQ(logits.rank(), 2) << "Sample: logits " << logits.DebugString();
  const int64_t rows = static_cast<int64_t>(plans.size());
  const int64_t vocab = logits.dim(1);
  DeviceSamples result;
  if (rows == 0) return result;
  bool any_penalty = false;
  for (const RowPlan& plan : plans) {
    CHECK(plan.row >= 0 && plan.row < logits.dim(0)) << "Sample: row " << plan.row << " of "
                                                       << logits.DebugString();
    CHECK(plan.candidates <= kMaxDeviceTopK && plan.num_top <= kMaxDeviceTopK)
        << "Sample: " << plan.candidates << " candidates and " << plan.num_top
        << " top logprobs; the GPU takes at most " << kMaxDeviceTopK;
    CHECK(plan.penalty_begin >= 0 &&
          plan.penalty_begin + plan.penalty_count <= static_cast<int64_t>(penalties.size()));
    any_penalty = any_penalty || plan.penalty_count > 0;
    result.max_num_top = std::max(result.max_num_top, plan.num_top);
  }
  const int64_t max_num_top = result.max_num_top;

  Layout at;
  at.plans = 0;
  at.penalties = Align(at.plans + rows * sizeof(RowPlan));
  at.scratch = Align(at.penalties + penalties.size() * sizeof(PenaltyEntry));
  at.chunk_mass = Align(at.scratch + (any_penalty ? rows * vocab * sizeof(float) : 0));
  at.token_ids = Align(at.chunk_mass + rows * sampling::NumChunks(vocab) * sizeof(double));
  at.logprobs = at.token_ids + rows * sizeof(int32_t);
  at.top_ids = at.logprobs + rows * sizeof(float);
  at.top_logprobs = at.top_ids + rows * max_num_top * sizeof(int32_t);
  at.end = at.top_logprobs + rows * max_num_top * sizeof(float);
  if (!buffer_.defined() || buffer_.nbytes() < at.end || !(buffer_.device() == logits.device())) {
    { const Tensor released = std::move(buffer_); }  // freed before the larger one is made
    buffer_ = Tensor::Empty(DType::kI64, {static_cast<int64_t>((at.end + 7) / 8)}, logits.device());
  }
  char* base = static_cast<char*>(buffer_.raw_data());

  std::vector<char> upload(at.scratch);
  std::memcpy(upload.data() + at.plans, plans.data(), rows * sizeof(RowPlan));
  if (!penalties.empty()) {
    std::memcpy(upload.data() + at.penalties, penalties.data(),
                penalties.size() * sizeof(PenaltyEntry));
  }
  GS_CUDA_CHECK(cudaMemcpy(base, upload.data(), upload.size(), cudaMemcpyHostToDevice));

  Outputs out;
  out.token_ids = reinterpret_cast<int32_t*>(base + at.token_ids);
  out.logprobs = reinterpret_cast<float*>(base + at.logprobs);
  out.top_ids = reinterpret_cast<int32_t*>(base + at.top_ids);
  out.top_logprobs = reinterpret_cast<float*>(base + at.top_logprobs);
  out.max_num_top = result.max_num_top;
  SampleKernel<<<static_cast<unsigned>(rows), kThreads, 0, internal::Stream()>>>(
      logits.data<float>(), vocab, reinterpret_cast<const RowPlan*>(base + at.plans),
      reinterpret_cast<const PenaltyEntry*>(base + at.penalties),
      reinterpret_cast<float*>(base + at.scratch), reinterpret_cast<double*>(base + at.chunk_mass),
      out);
  GS_CUDA_CHECK_LAUNCH("SampleKernel");

  std::vector<char> download(at.end - at.token_ids);
  GS_CUDA_CHECK(cudaMemcpy(download.data(), base + at.token_ids, download.size(),
                           cudaMemcpyDeviceToHost));
  const char* results = download.data();
  auto copy_out = [&](auto& vector, size_t offset, int64_t count) {
    vector.resize(count);
    std::memcpy(vector.data(), results + (offset - at.token_ids), count * sizeof(vector[0]));
  };
  copy_out(result.token_ids, at.token_ids, rows);
  copy_out(result.logprobs, at.logprobs, rows);
  copy_out(result.top_ids, at.top_ids, rows * max_num_top);
  copy_out(result.top_logprobs, at.top_logprobs, rows * max_num_top);
  return result;
}

}  // namespace gemmaserve::kernels
