// The arithmetic that decides which token a sampler draws, shared by the CPU sampler
// (ops/sampler.cc) and the CUDA one (kernels/sampling.cu), so that both choose the same token for
// the same logits, options and seed:
//
//   - the draw: a hash of (seed, token index), integers only;
//   - each token's weight exp(logit · scale − top): Exp below, built from single multiplies, adds
//     and subtracts, each rounded on its own (never fused into an FMA), so it gives the same bits
//     on any x86 and any GPU, which the libraries' expf do not promise;
//   - the weights' sums, in double, in one fixed order: sequentially within chunks of kChunk ids,
//     then over the chunks in order; a GPU sums the chunks in parallel, each exactly as here.
//
// Everything is a pure inline function of its arguments, compiled for the host and the device.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace gemmaserve::sampling {

// Token ids per partial sum of the id-order draw (DrawInIdOrder).
inline constexpr int64_t kChunk = 256;

// A token some penalty touches (ops::PenaltyEntries): each token once.
struct PenaltyEntry {
  int32_t token_id = 0;
  int32_t output_count = 0;  // appearances in the output, when presence or frequency applies
};

// One row's sampling, resolved from its options (ops::PlanRow). Plain data: the GPU reads it.
struct RowPlan {
  int64_t row = 0;                // of the logits
  double draw = 0.0;              // UniformDraw(seed, token index); unused when greedy
  float scale = 1.0f;             // 1 / temperature; 1 when greedy
  float top_p = 1.0f;             // 1 = off
  float log_min_p = -INFINITY;    // log(min_p); -inf = off
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t greedy = 1;
  int32_t candidates = 0;         // draw among this many most likely (top-k, or all for top-p);
                                  // 0 = among every token in id order
  int32_t num_top = 0;            // top logprobs to return
  int32_t repetition = 0;         // whether repetition_penalty applies to the entries
  int32_t penalty_begin = 0;      // the row's PenaltyEntry range
  int32_t penalty_count = 0;
};

// Single IEEE operations, rounded to nearest. On the device nvcc would otherwise fuse a multiply
// and an add into one FMA (one rounding, another result); the host code that includes this is
// compiled without FMA instructions (and -ffp-contract=off where it could have them).
GS_HOST_DEVICE inline float Mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
GS_HOST_DEVICE inline float Add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
GS_HOST_DEVICE inline float Sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
GS_HOST_DEVICE inline float Div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
GS_HOST_DEVICE inline double AddDouble(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// splitmix64: a well-mixed 64-bit hash, so nearby (seed, index) pairs give unrelated draws.
GS_HOST_DEVICE inline uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from the top 53 bits of the hash of (seed, index); exact in double.
GS_HOST_DEVICE inline double UniformDraw(uint64_t seed, uint64_t index) {
  const uint64_t bits = Mix(Mix(seed) ^ Mix(index + 0x632be59bd9b4e019ull));
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

// e^x within 2 ulp for x in (-86, 88]; 0 at or below -86 (and for NaN). x = k·ln2 + r with
// |r| ≤ ln2/2 (Cody and Waite's two-part ln2: k·kLn2High is exact for |k| < 2^8), e^r by its
// Taylor polynomial to r^7 (truncation below 1e-8 relative), times 2^k built from its bits
// (k ≥ -124 keeps the result normal, so no flush-to-zero setting can change it). k is rounded to
// nearest-even by adding and subtracting 1.5 · 2^23, exact below 2^22. No branch: a loop of it
// vectorises, with the same operations, so the same bits.
GS_HOST_DEVICE inline float Exp(float x) {
  const bool in_range = x > -86.0f;
  const float t = in_range ? x : -86.0f;
  constexpr float kLog2E = 1.44269504088896341f;
  constexpr float kLn2High = 0.693145751953125f;     // 0x3f317200: 16 significant bits
  constexpr float kLn2Low = 1.42860682030941723e-6f;  // ln 2 − kLn2High
  constexpr float kRound = 12582912.0f;               // 1.5 · 2^23
  const float k = Sub(Add(Mul(t, kLog2E), kRound), kRound);
  const float r = Sub(Sub(t, Mul(k, kLn2High)), Mul(k, kLn2Low));
  float p = 1.0f / 5040.0f;
  p = Add(Mul(p, r), 1.0f / 720.0f);
  p = Add(Mul(p, r), 1.0f / 120.0f);
  p = Add(Mul(p, r), 1.0f / 24.0f);
  p = Add(Mul(p, r), 1.0f / 6.0f);
  p = Add(Mul(p, r), 0.5f);
  p = Add(Mul(p, r), 1.0f);
  p = Add(Mul(p, r), 1.0f);
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return in_range ? Mul(p, scale) : 0.0f;
}

// What a token's weight depends on besides its logit: probabilities ∝ exp(logit · scale − top)
// where top is the largest logit · scale; tokens whose logit · scale falls below `floor` (min-p:
// top + log(min_p); -inf when off) weigh 0.
struct WeightParams {
  float scale = 1.0f;  // 1 / temperature
  float top = 0.0f;
  float floor = -INFINITY;
};

GS_HOST_DEVICE inline double Weight(float logit, const WeightParams& w) {
  const float scaled = Mul(logit, w.scale);
  return scaled < w.floor ? 0.0 : static_cast<double>(Exp(Sub(scaled, w.top)));
}

// The weights of ids [begin, end), summed in id order.
GS_HOST_DEVICE inline double ChunkMass(const float* logits, int64_t begin, int64_t end,
                                       const WeightParams& w) {
  double mass = 0.0;
  for (int64_t i = begin; i < end; ++i) mass = AddDouble(mass, Weight(logits[i], w));
  return mass;
}

#if !defined(__CUDA_ARCH__)
// ChunkMass on the host, bitwise: the chunk's weights first, in a loop the compiler vectorises,
// then the same sum in the same order.
inline double ChunkMassOnHost(const float* logits, int64_t begin, int64_t end,
                              const WeightParams& w) {
  float weights[kChunk];
  const int64_t n = end - begin;
  for (int64_t i = 0; i < n; ++i) {
    const float scaled = Mul(logits[begin + i], w.scale);
    weights[i] = scaled < w.floor ? 0.0f : Exp(Sub(scaled, w.top));
  }
  double mass = 0.0;
  for (int64_t i = 0; i < n; ++i) mass += static_cast<double>(weights[i]);
  return mass;
}
#endif

GS_HOST_DEVICE inline int64_t NumChunks(int64_t vocab_size) {
  return (vocab_size + kChunk - 1) / kChunk;
}

// The id-order draw (every token a candidate): the first id whose cumulative weight exceeds
// draw × total, `chunk_mass` holding ChunkMass of each of the NumChunks(vocab_size) chunks. The
// cumulative weight is the chunks' before it, in order, plus the id's chunk's up to it; where
// rounding leaves the target past every id, the last id with weight.
GS_HOST_DEVICE inline int32_t DrawInIdOrder(const float* logits, int64_t vocab_size,
                                            const double* chunk_mass, const WeightParams& w,
                                            double draw) {
  const int64_t chunks = NumChunks(vocab_size);
  double mass = 0.0;
  for (int64_t c = 0; c < chunks; ++c) mass = AddDouble(mass, chunk_mass[c]);
  const double target = draw * mass;
  double before = 0.0;
  int64_t last_kept = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    if (chunk_mass[c] == 0.0) continue;
    const int64_t begin = c * kChunk;
    const int64_t end = begin + kChunk < vocab_size ? begin + kChunk : vocab_size;
    const bool inside = target < AddDouble(before, chunk_mass[c]);
    double cumulative = before;
    for (int64_t i = begin; i < end; ++i) {
      const double weight = Weight(logits[i], w);
      if (weight == 0.0) continue;
      last_kept = i;
      cumulative = AddDouble(cumulative, weight);
      if (inside && target < cumulative) return static_cast<int32_t>(i);
    }
    before = AddDouble(before, chunk_mass[c]);
  }
  return static_cast<int32_t>(last_kept);
}

// The draw among `candidates` (ids, most likely first, ties by lower id: TopIds' order): min-p
// ends the list at the first candidate below the floor, top-p at the shortest prefix whose weight
// reaches top_p of what min-p kept, and the draw picks from that prefix by cumulative weight.
// `w.top` must be candidates[0]'s logit · scale.
GS_HOST_DEVICE inline int32_t DrawFromCandidates(const float* logits, const int32_t* candidates,
                                                 int64_t count, const WeightParams& w,
                                                 float top_p, double draw) {
  double mass = 0.0;
  int64_t kept = 0;
  for (; kept < count; ++kept) {
    const double weight = Weight(logits[candidates[kept]], w);
    if (weight == 0.0 && kept > 0) break;  // below the floor; the top is never below it
    mass = AddDouble(mass, weight);
  }
  if (top_p < 1.0f) {
    const double needed = static_cast<double>(top_p) * mass;
    double cumulative = 0.0;
    int64_t prefix = 0;
    while (prefix < kept) {
      cumulative = AddDouble(cumulative, Weight(logits[candidates[prefix++]], w));
      if (cumulative >= needed) break;
    }
    kept = prefix;
    mass = cumulative;
  }
  const double target = draw * mass;
  double cumulative = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    cumulative = AddDouble(cumulative, Weight(logits[candidates[i]], w));
    if (target < cumulative) return candidates[i];
  }
  return candidates[kept > 0 ? kept - 1 : 0];
}

// The penalties of one token, as OpenAI and vLLM define them: repetition (when the token is in
// the prompt or the output) divides a positive logit and multiplies a negative one; presence
// and frequency subtract once, and once per appearance in the output (`output_count`).
GS_HOST_DEVICE inline float Penalize(float logit, bool repeated, float repetition,
                                     int32_t output_count, float presence, float frequency) {
  if (repeated) logit = logit > 0 ? Div(logit, repetition) : Mul(logit, repetition);
  if (output_count > 0) {
    logit = Sub(logit, Add(presence, Mul(frequency, static_cast<float>(output_count))));
  }
  return logit;
}

}  // namespace gemmaserve::sampling
