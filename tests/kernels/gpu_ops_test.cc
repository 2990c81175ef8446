// Every CUDA kernel against its CPU op (the reference) on random inputs, at the shapes Gemma 4 uses
// (widths 2816 and 5376, head dims 256 and 512, GQA groups 1–8, 128 experts top-8, positions up
// to 262,143). Tolerances: max |Δ| ≤ 1e-5 × max |ref| for element-wise ops, norms and RoPE,
// ≤ 1e-4 for matrix products and attention. The GpuOpsSanitizer* cases use small shapes, for
// compute-sanitizer. Every test skips with the reason where no GPU is visible.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/linear.h"
#include "kernels/sampling.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/copy.h"
#include "ops/elementwise.h"
#include "ops/graph.h"
#include "ops/linear.h"
#include "ops/moe.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "ops/routing.h"
#include "ops/sampler.h"
#include "tests/kernels/gpu_test_util.h"
#include "tests/ops/sampling_cases.h"

namespace gemmaserve::testing {
namespace {

class GpuOpsTest : public ::testing::Test {
 protected:
  void SetUp() override { GS_REQUIRE_GPU(); }
  std::mt19937 rng_{2026};
};

TEST_F(GpuOpsTest, RmsNormWithAndWithoutWeightAtGemmaWidths) {
  for (int64_t dim : {128, 256, 512, 2816, 5376}) {
    Tensor x = Random({7, dim}, rng_, -3.0f, 3.0f);
    Tensor w = Random({dim}, rng_, 0.5f, 1.5f);
    for (bool weighted : {true, false}) {
      Tensor cpu = Nan({7, dim});
      ops::RmsNorm(x, weighted ? w : Tensor(), 1e-6f, cpu);
      Tensor gpu_x = ToGpu(x);
      Tensor gpu = ToGpu(Nan({7, dim}));
      ops::RmsNorm(gpu_x, weighted ? ToGpu(w) : Tensor(), 1e-6f, gpu);
      ExpectClose(ToCpu(gpu), cpu, 1e-5, "RmsNorm " + std::to_string(dim));
      ops::RmsNorm(gpu_x, weighted ? ToGpu(w) : Tensor(), 1e-6f, gpu_x);  // in place
      ExpectClose(ToCpu(gpu_x), cpu, 1e-5, "RmsNorm in place " + std::to_string(dim));
    }
  }
}

// The fused residual update against the GPU's own unfused kernels (bitwise) and the CPU op.
TEST_F(GpuOpsTest, AddRmsNormIsTheUnfusedKernelsBitwiseAtGemmaWidths) {
  for (int64_t dim : {128, 2816, 5376}) {
    for (const float scale : {1.0f, 0.37f}) {
      for (const bool with_next : {true, false}) {
        const std::string what = "AddRmsNorm " + std::to_string(dim) + " scale " +
                                 std::to_string(scale) + (with_next ? " next" : "");
        const Tensor x = Random({5, dim}, rng_, -4.0f, 4.0f);
        const Tensor post = Random({dim}, rng_, 0.5f, 3.0f);
        const Tensor next_weight = with_next ? Random({dim}, rng_, 0.5f, 3.0f) : Tensor();
        const Tensor start = Random({5, dim}, rng_, -20.0f, 20.0f);
        Tensor cpu = start.ToF32();
        Tensor cpu_next = Nan({5, dim});
        ops::AddRmsNorm(x, post, scale, next_weight, 1e-6f, cpu, cpu_next);

        const Tensor gpu_x = ToGpu(x);
        const Tensor gpu_post = ToGpu(post);
        const Tensor gpu_next_weight = with_next ? ToGpu(next_weight) : Tensor();
        Tensor fused = ToGpu(start);
        Tensor fused_next = ToGpu(Nan({5, dim}));
        ops::AddRmsNorm(gpu_x, gpu_post, scale, gpu_next_weight, 1e-6f, fused, fused_next);
        Tensor unfused = ToGpu(start);
        Tensor unfused_next = ToGpu(Nan({5, dim}));
        Tensor normed = ToGpu(Nan({5, dim}));
        ops::RmsNorm(gpu_x, gpu_post, 1e-6f, normed);
        ops::AddInPlace(unfused, normed);
        ops::ScaleInPlace(unfused, scale);
        if (with_next) ops::RmsNorm(unfused, gpu_next_weight, 1e-6f, unfused_next);

        ExpectClose(ToCpu(fused), ToCpu(unfused), 0.0, what + " residual, fused vs unfused");
        ExpectClose(ToCpu(fused), cpu, 1e-5, what + " residual, GPU vs CPU");
        if (with_next) {
          ExpectClose(ToCpu(fused_next), ToCpu(unfused_next), 0.0, what + " next, fused vs unfused");
          ExpectClose(ToCpu(fused_next), cpu_next, 1e-5, what + " next, GPU vs CPU");
        }
      }
    }
  }
}

TEST_F(GpuOpsTest, RopeDefaultAndProportionalUpToTheLastPosition) {
  struct Case {
    int64_t head_dim, angles;
    double theta;
  };
  const std::vector<int32_t> positions = {0, 1, 1023, 4096, 131071, 200000, 262143};
  for (const Case& c : {Case{256, 128, 1e4}, Case{512, 64, 1e6}, Case{32, 16, 1e4},
                        Case{64, 8, 1e6}}) {
    Tensor x = Random({static_cast<int64_t>(positions.size()), 3, c.head_dim}, rng_);
    Tensor cpu = x.ToF32();  // a copy
    ops::Rotary(c.head_dim, c.angles, c.theta).Apply(cpu, Ints(positions));
    Tensor gpu = ToGpu(x);
    ops::Rotary(c.head_dim, c.angles, c.theta, Gpu()).Apply(gpu, ToGpu(Ints(positions)));
    ExpectClose(ToCpu(gpu), cpu, 1e-5, "RoPE head_dim " + std::to_string(c.head_dim));
  }
}

TEST_F(GpuOpsTest, ElementwiseOpsGeluGateAndSoftcap) {
  Tensor x = Random({5, 2816}, rng_, -4.0f, 4.0f);
  Tensor y = Random({5, 2816}, rng_, -4.0f, 4.0f);
  Tensor w = Random({2816}, rng_, 0.5f, 1.5f);
  {
    Tensor cpu = x.ToF32(), gpu = ToGpu(x);
    ops::AddInPlace(cpu, y);
    ops::AddInPlace(gpu, ToGpu(y));
    ExpectClose(ToCpu(gpu), cpu, 1e-6, "AddInPlace");
    ops::ScaleInPlace(cpu, 0.37f);
    ops::ScaleInPlace(gpu, 0.37f);
    ExpectClose(ToCpu(gpu), cpu, 1e-6, "ScaleInPlace");
    ops::MultiplyInPlace(cpu, w, 0.0188f);
    ops::MultiplyInPlace(gpu, ToGpu(w), 0.0188f);
    ExpectClose(ToCpu(gpu), cpu, 1e-6, "MultiplyInPlace");
  }
  {
    Tensor logits = Random({3, 4099}, rng_, -200.0f, 200.0f);
    Tensor cpu = logits.ToF32(), gpu = ToGpu(logits);
    ops::SoftcapInPlace(cpu, 30.0f);
    ops::SoftcapInPlace(gpu, 30.0f);
    ExpectClose(ToCpu(gpu), cpu, 1e-5, "SoftcapInPlace");
  }
  {
    Tensor gate_up = Random({6, 2 * 704}, rng_, -5.0f, 5.0f);
    Tensor cpu = Nan({6, 704});
    ops::GeluTanhGate(gate_up, cpu);
    Tensor gpu = ToGpu(Nan({6, 704}));
    ops::GeluTanhGate(ToGpu(gate_up), gpu);
    ExpectClose(ToCpu(gpu), cpu, 1e-5, "GeluTanhGate");
  }
  {
    Tensor counts = ToGpu(Tensor::FromInts({1, 2, 3, 4}, {4}));
    ops::SetZero(counts);
    const Tensor back = ToCpu(counts);
    for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(back.data<int32_t>()[i], 0);
  }
}

TEST_F(GpuOpsTest, EmbeddingFromF32AndBf16TablesAndAVocabShard) {
  Tensor table = Random({40, 96}, rng_);
  const std::vector<int32_t> ids = {3, 39, 0, 17, 3, 25};
  Tensor cpu = Nan({6, 96});
  ops::EmbeddingLookup(table, Ints(ids), 73.5f, cpu, /*first_row=*/10);  // rows 10 … 49 held
  Tensor gpu = ToGpu(Nan({6, 96}));
  ops::EmbeddingLookup(ToGpu(table), ToGpu(Ints(ids)), 73.5f, gpu, 10);
  ExpectClose(ToCpu(gpu), cpu, 1e-6, "EmbeddingLookup f32");
  Tensor rounded = RoundedToBf16(table);
  ops::EmbeddingLookup(rounded, Ints(ids), 73.5f, cpu, 10);
  ops::EmbeddingLookup(ToGpu(ToBf16(table)), ToGpu(Ints(ids)), 73.5f, gpu, 10);
  ExpectClose(ToCpu(gpu), cpu, 1e-6, "EmbeddingLookup bf16");
}

TEST_F(GpuOpsTest, LinearExactInF32AndOnBf16InputsInBf16) {
  for (int64_t rows : {1, 7, 64}) {
    Tensor x = Random({rows, 2816}, rng_);
    Tensor w = Random({1408, 2816}, rng_, -0.05f, 0.05f);
    Tensor cpu = Nan({rows, 1408});
    ops::Linear(x, w, cpu);
    Tensor gpu = ToGpu(Nan({rows, 1408}));
    ops::Linear(ToGpu(x), ToGpu(w), gpu);
    ExpectClose(ToCpu(gpu), cpu, 1e-4, "Linear f32, rows " + std::to_string(rows));
    // bf16: the same product as the CPU's over the bf16-rounded x and w.
    ops::Linear(RoundedToBf16(x), RoundedToBf16(w), cpu);
    ops::Linear(ToGpu(x), ToGpu(ToBf16(w)), gpu);
    ExpectClose(ToCpu(gpu), cpu, 1e-4, "Linear bf16, rows " + std::to_string(rows));
  }
}

// A paged cache holding `context` random keys and values per sequence, blocks scattered; with
// keys_from_values, values only, the keys rebuilt from them (ops::KeysFromValues) by both kernels.
struct PagedCase {
  int64_t head_dim, num_heads, num_kv_heads, window;
  DType kv_dtype;
  bool keys_from_values = false;
  // Per sequence: tokens already cached, and this step's. The default: a first prefill, a chunk,
  // a decode. Few (token, KV head) pairs take the split-KV path.
  std::vector<int64_t> cached = {0, 37, 100};
  std::vector<int64_t> tokens = {21, 9, 1};
  // Against the CPU on q rounded to bf16, within this × max |ref|: the tensor-core kernel's.
  double tolerance = 1e-4;
};

void RunPagedAttention(const PagedCase& c, std::mt19937& rng) {
  const int64_t block_size = 16;
  const std::vector<int64_t>& cached = c.cached;
  const std::vector<int64_t>& tokens = c.tokens;
  int64_t max_blocks = 0;
  int64_t num_blocks = 0;
  for (size_t s = 0; s < cached.size(); ++s) {
    const int64_t blocks = (cached[s] + tokens[s] + block_size - 1) / block_size;
    max_blocks = std::max(max_blocks, blocks);
    num_blocks += blocks;
  }
  std::vector<int32_t> order(num_blocks);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  const Shape cache_shape = {num_blocks, block_size, c.num_kv_heads, c.head_dim};
  Tensor v_cache = Tensor::Zeros(c.kv_dtype, cache_shape);
  Tensor k_cache = c.keys_from_values ? Tensor() : Tensor::Zeros(c.kv_dtype, cache_shape);
  Tensor gpu_v = ToGpu(v_cache);
  Tensor gpu_k = c.keys_from_values ? Tensor() : ToGpu(k_cache);
  std::vector<int32_t> begin, num, context, tables;
  int64_t next_token = 0, next_block = 0;
  for (size_t s = 0; s < cached.size(); ++s) {
    const int64_t length = cached[s] + tokens[s];
    std::vector<int32_t> table(max_blocks, -1);
    for (int64_t b = 0; b < (length + block_size - 1) / block_size; ++b) table[b] = order[next_block++];
    std::vector<int32_t> slots;
    for (int64_t p = 0; p < length; ++p) slots.push_back(table[p / block_size] * block_size + p % block_size);
    Tensor keys = Random({length, c.num_kv_heads, c.head_dim}, rng, -1.5f, 1.5f);
    Tensor values = Random({length, c.num_kv_heads, c.head_dim}, rng, -1.5f, 1.5f);
    ops::WriteKvCache(keys, values, Ints(slots), k_cache, v_cache);
    ops::WriteKvCache(ToGpu(keys), ToGpu(values), ToGpu(Ints(slots)), gpu_k, gpu_v);
    begin.push_back(static_cast<int32_t>(next_token));
    num.push_back(static_cast<int32_t>(tokens[s]));
    context.push_back(static_cast<int32_t>(length));
    tables.insert(tables.end(), table.begin(), table.end());
    next_token += tokens[s];
  }
  if (!c.keys_from_values) ExpectClose(ToCpu(gpu_k), k_cache, 0.0, "WriteKvCache keys");
  ExpectClose(ToCpu(gpu_v), v_cache, 0.0, "WriteKvCache values");
  ops::AttentionMetadata cpu_meta;
  cpu_meta.token_begin = Ints(begin);
  cpu_meta.num_tokens = Ints(num);
  cpu_meta.context_lens = Ints(context);
  cpu_meta.block_tables = Tensor::FromInts(tables, {static_cast<int64_t>(cached.size()), max_blocks});
  cpu_meta.max_context_len = *std::max_element(context.begin(), context.end());
  ops::AttentionMetadata gpu_meta = cpu_meta;
  gpu_meta.token_begin = ToGpu(cpu_meta.token_begin);
  gpu_meta.num_tokens = ToGpu(cpu_meta.num_tokens);
  gpu_meta.context_lens = ToGpu(cpu_meta.context_lens);
  gpu_meta.block_tables = ToGpu(cpu_meta.block_tables);
  Tensor q = Random({next_token, c.num_heads, c.head_dim}, rng, -1.5f, 1.5f);
  // A full layer's proportional RoPE (a quarter of the angles rotate) and a k_norm weight.
  ops::Rotary cpu_rotary(c.head_dim, c.head_dim / 8, 1e6);
  ops::Rotary gpu_rotary(c.head_dim, c.head_dim / 8, 1e6, Gpu());
  const Tensor k_norm = Random({c.head_dim}, rng, 0.5f, 1.5f);
  const ops::KeysFromValues cpu_rebuild{k_norm, cpu_rotary.inv_freq(),
                                        cpu_rotary.Table(cpu_meta.max_context_len)};
  const ops::KeysFromValues gpu_rebuild{ToGpu(k_norm), gpu_rotary.inv_freq(), {}};
  Tensor cpu = Nan(q.shape());
  const bool bf16_products = c.tolerance > 1e-4;  // the tensor cores round q to bf16
  ops::PagedAttention(bf16_products ? RoundedToBf16(q) : q, k_cache, v_cache, cpu_meta, c.window,
                      1.0f, cpu, c.keys_from_values ? &cpu_rebuild : nullptr);
  Tensor gpu = ToGpu(Nan(q.shape()));
  ops::PagedAttention(ToGpu(q), gpu_k, gpu_v, gpu_meta, c.window, 1.0f, gpu,
                      c.keys_from_values ? &gpu_rebuild : nullptr);
  ExpectClose(ToCpu(gpu), cpu, c.tolerance,
              "PagedAttention head_dim " + std::to_string(c.head_dim) + ", group " +
                  std::to_string(c.num_heads / c.num_kv_heads) + ", window " +
                  std::to_string(c.window) + ", KV " + std::string(DTypeName(c.kv_dtype)) +
                  (c.keys_from_values ? ", keys rebuilt from values" : ""));
}

// Prefills over a bf16 cache go to the tensor cores (bf16 products, f32 sums and softmax): each
// head_dim Gemma 4 and the tiny models use, GQA groups 2 and 8, windows, values-only caches,
// a chunk after cached tokens and a sequence shorter than a tile beside a long one.
TEST_F(GpuOpsTest, PagedAttentionPrefillsOnTensorCores) {
  const std::vector<int64_t> cached = {0, 150, 0};
  const std::vector<int64_t> tokens = {300, 77, 5};
  for (int64_t window : {0, 128}) {
    RunPagedAttention({256, 4, 2, window, DType::kBF16, false, cached, tokens, 1e-2}, rng_);
    RunPagedAttention({512, 8, 1, window, DType::kBF16, true, cached, tokens, 1e-2}, rng_);
    RunPagedAttention({32, 4, 2, window, DType::kBF16, false, cached, tokens, 1e-2}, rng_);
    RunPagedAttention({64, 4, 1, window, DType::kBF16, true, cached, tokens, 1e-2}, rng_);
  }
}

// Decoding a few sequences at long contexts: each (token, KV head)'s keys split over many
// blocks (up to 64 runs), then merged; windows and values-only caches included.
TEST_F(GpuOpsTest, PagedAttentionSplitsLongDecodesOverKeys) {
  const std::vector<int64_t> cached = {5000, 2047, 300};
  const std::vector<int64_t> tokens = {1, 1, 1};
  for (int64_t window : {0, 1024}) {
    RunPagedAttention({256, 16, 8, window, DType::kBF16, false, cached, tokens}, rng_);
    RunPagedAttention({512, 16, 2, window, DType::kF32, true, cached, tokens}, rng_);
  }
  // One sequence, one KV head: the most runs.
  RunPagedAttention({512, 8, 1, 0, DType::kBF16, true, {9000}, {1}}, rng_);
}

TEST_F(GpuOpsTest, PagedAttentionHeadDims256And512GqaGroupsWindowsAndBf16Kv) {
  for (int64_t head_dim : {256, 512}) {
    for (int64_t group : {1, 2, 4, 8}) {
      for (int64_t window : {0, 24}) {
        for (DType kv : {DType::kF32, DType::kBF16}) {
          RunPagedAttention({head_dim, 2 * group, 2, window, kv}, rng_);
        }
      }
    }
  }
}

TEST_F(GpuOpsTest, PagedAttentionRebuildsKeysFromValuesAsTheCpuDoes) {
  // Gemma 4's k_eq_v full layers (head_dim 512, 8 query heads per KV head), and other shapes.
  for (int64_t head_dim : {64, 256, 512}) {
    for (int64_t group : {1, 8}) {
      for (DType kv : {DType::kF32, DType::kBF16}) {
        RunPagedAttention({head_dim, 2 * group, 2, 0, kv, true}, rng_);
        RunPagedAttention({head_dim, 2 * group, 2, 24, kv, true}, rng_);
      }
    }
  }
}

struct PrepareCase {
  int64_t head_dim, angles, heads, kv_heads;
  bool keys_from_values;  // k_raw is v_raw and the cache holds values only
  DType kv_dtype;
};

// PrepareAttention on the GPU against the GPU's own ops one at a time (bitwise) and the CPU's.
void RunPrepareAttention(const PrepareCase& c, std::mt19937& rng) {
  const std::string what = "PrepareAttention head_dim " + std::to_string(c.head_dim) +
                           (c.keys_from_values ? " values only" : "") + " " +
                           std::string(DTypeName(c.kv_dtype));
  constexpr int64_t kTokens = 9, kBlocks = 4, kStride = 8;
  const Tensor q = Random({kTokens, c.heads, c.head_dim}, rng, -3.0f, 3.0f);
  const Tensor k_raw = Random({kTokens, c.kv_heads, c.head_dim}, rng, -3.0f, 3.0f);
  const Tensor v_raw = c.keys_from_values ? k_raw : Random({kTokens, c.kv_heads, c.head_dim}, rng);
  const Tensor q_norm = Random({c.head_dim}, rng, 0.5f, 1.5f);
  const Tensor k_norm = Random({c.head_dim}, rng, 0.5f, 1.5f);
  const std::vector<int32_t> positions = {0, 1, 2, 17, 4095, 131071, 262143, 9, 3};
  // The last token is a padding row (model::PadForGraph): cached nowhere.
  const std::vector<int32_t> slots = {0, 1, 2, 9, 17, 31, 30, 8, ops::kPaddingSlot};
  const Shape cache_shape = {kBlocks, kStride, c.kv_heads, c.head_dim};
  ops::Rotary cpu_rotary(c.head_dim, c.angles, 1e6);
  ops::Rotary gpu_rotary(c.head_dim, c.angles, 1e6, Gpu());

  struct Result {
    Tensor q, k, v, k_cache, v_cache;
  };
  auto run = [&](bool on_gpu, bool fused) {
    // A copy on the host too: q is rotated in place.
    auto place = [&](const Tensor& t) { return on_gpu ? ToGpu(t) : t.ToF32(); };
    auto empty_cache = [&] {
      const Tensor zeros = Tensor::Zeros(c.kv_dtype, cache_shape);
      return on_gpu ? ToGpu(zeros) : zeros;
    };
    Result r{place(q), place(Nan(k_raw.shape())), place(Nan(k_raw.shape())),
             c.keys_from_values ? Tensor() : empty_cache(), empty_cache()};
    const Tensor kr = place(k_raw);
    const Tensor vr = c.keys_from_values ? kr : place(v_raw);
    const Tensor qn = place(q_norm), kn = place(k_norm);
    const Tensor pos = place(Ints(positions)), sl = place(Ints(slots));
    const ops::Rotary& rotary = on_gpu ? gpu_rotary : cpu_rotary;
    if (fused) {
      ops::PrepareAttention(r.q, kr, vr, {qn, kn, 1e-6f, rotary, pos, sl}, r.k, r.v, r.k_cache,
                            r.v_cache);
    } else {
      ops::RmsNorm(r.q, qn, 1e-6f, r.q);
      rotary.Apply(r.q, pos);
      ops::RmsNorm(kr, kn, 1e-6f, r.k);
      rotary.Apply(r.k, pos);
      ops::RmsNorm(vr, Tensor(), 1e-6f, r.v);
      ops::WriteKvCache(r.k, r.v, sl, r.k_cache, r.v_cache);
    }
    return r;
  };
  const Result fused = run(true, true);
  const Result unfused = run(true, false);
  const Result cpu = run(false, true);
  ExpectClose(ToCpu(fused.q), ToCpu(unfused.q), 0.0, what + " q, fused vs unfused");
  ExpectClose(ToCpu(fused.k), ToCpu(unfused.k), 0.0, what + " k, fused vs unfused");
  ExpectClose(ToCpu(fused.v), ToCpu(unfused.v), 0.0, what + " v, fused vs unfused");
  ExpectClose(ToCpu(fused.v_cache), ToCpu(unfused.v_cache), 0.0, what + " v cache");
  ExpectClose(ToCpu(fused.q), cpu.q, 1e-5, what + " q, GPU vs CPU");
  ExpectClose(ToCpu(fused.k), cpu.k, 1e-5, what + " k, GPU vs CPU");
  ExpectClose(ToCpu(fused.v), cpu.v, 1e-5, what + " v, GPU vs CPU");
  ExpectClose(ToCpu(fused.v_cache), cpu.v_cache, 1e-5, what + " v cache, GPU vs CPU");
  if (!c.keys_from_values) {
    ExpectClose(ToCpu(fused.k_cache), ToCpu(unfused.k_cache), 0.0, what + " k cache");
    ExpectClose(ToCpu(fused.k_cache), cpu.k_cache, 1e-5, what + " k cache, GPU vs CPU");
  }
}

TEST_F(GpuOpsTest, PrepareAttentionIsTheNormsRopeAndKvWriteBitwise) {
  for (const PrepareCase& c : {PrepareCase{256, 128, 8, 4, false, DType::kF32},
                               PrepareCase{256, 128, 8, 4, false, DType::kBF16},
                               PrepareCase{512, 64, 8, 1, true, DType::kF32},
                               PrepareCase{512, 64, 8, 1, true, DType::kBF16},
                               PrepareCase{32, 16, 4, 2, false, DType::kF32}}) {
    RunPrepareAttention(c, rng_);
  }
}

// A graph of ops recorded once and replayed on its buffers' new contents gives what the ops give
// when called; a matmul over a larger input moves the bf16 scratch the graph recorded, which
// makes it stale; a recording that synchronises fails without a CHECK failure.
TEST_F(GpuOpsTest, GraphReplaysItsOpsOnTheirBuffersNewContents) {
  const int64_t rows = 4, in = 2816, out = 512;
  Tensor x = ToGpu(Random({rows, in}, rng_));
  const Tensor w = ToGpu(ToBf16(Random({out, in}, rng_, -0.05f, 0.05f)));
  const Tensor norm = ToGpu(Random({out}, rng_, 0.5f, 1.5f));
  const Tensor slots = ToGpu(Ints({3, ops::kPaddingSlot, 0, 6}));
  Tensor y = ToGpu(Nan({rows, out}));
  Tensor z = ToGpu(Nan({rows, out}));
  Tensor values = ToGpu(Tensor::Zeros(DType::kBF16, {2, 4, 2, out / 2}));
  Tensor no_keys;
  auto step = [&] {
    ops::Linear(x, w, y);
    ops::RmsNorm(y, norm, 1e-6f, z);
    ops::WriteKvCache(Tensor(), z.View({rows, 2, out / 2}), slots, no_keys, values);
  };
  step();  // eagerly first: the matmul's scratch is made outside the recording
  absl::StatusOr<std::unique_ptr<ops::DeviceGraph>> graph = ops::DeviceGraph::Capture(Gpu(), step);
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_GE((*graph)->num_nodes(), 3);
  for (int replay = 0; replay < 3; ++replay) {
    const Tensor input = Random({rows, in}, rng_);
    ops::Copy(input, x);
    (*graph)->Replay();
    const Tensor replayed_z = ToCpu(z);
    const Tensor replayed_values = ToCpu(values);
    ops::SetZero(values);
    step();
    EXPECT_TRUE(ops::SameBits(replayed_z, ToCpu(z))) << "replay " << replay;
    EXPECT_TRUE(ops::SameBits(replayed_values, ToCpu(values))) << "replay " << replay;
    ops::SetZero(values);
  }
  EXPECT_FALSE((*graph)->stale());
  // Larger than any matmul input before it in this binary, unless a repeat or a shuffle ran one.
  const int64_t generation = kernels::ScratchGeneration();
  const int64_t many = 16384;
  Tensor wide = ToGpu(Nan({many, out}));
  ops::Linear(ToGpu(Random({many, in}, rng_)), w, wide);
  EXPECT_EQ((*graph)->stale(), kernels::ScratchGeneration() != generation);

  // A recording that copies to the host fails, naming the call, and the ops work on as before.
  const absl::StatusOr<std::unique_ptr<ops::DeviceGraph>> refused =
      ops::DeviceGraph::Capture(Gpu(), [&] {
        step();
        ops::ToHost(z);
      });
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("cudaMemcpy"), std::string::npos) << refused.status();
  step();
  const Tensor first = ToCpu(z);
  step();
  EXPECT_TRUE(ops::SameBits(ToCpu(z), first));
}

TEST_F(GpuOpsTest, RoutingOn128ExpertsTop8AndOn8Top2) {
  for (auto [experts, k] : {std::pair<int64_t, int64_t>{128, 8}, {8, 2}}) {
    Tensor logits = Random({33, experts}, rng_, -3.0f, 3.0f);
    Tensor scale = Random({experts}, rng_, 0.8f, 1.2f);
    Tensor cpu_ids = Tensor::Empty(DType::kI32, {33, k});
    Tensor cpu_w = Nan({33, k});
    ops::TopKRouting(logits, scale, k, cpu_ids, cpu_w);
    Tensor gpu_ids = ToGpu(Tensor::Empty(DType::kI32, {33, k}));
    Tensor gpu_w = ToGpu(Nan({33, k}));
    ops::TopKRouting(ToGpu(logits), ToGpu(scale), k, gpu_ids, gpu_w);
    const Tensor ids = ToCpu(gpu_ids);
    EXPECT_TRUE(std::equal(ids.data<int32_t>(), ids.data<int32_t>() + ids.numel(),
                           cpu_ids.data<int32_t>()))
        << experts << " experts";
    ExpectClose(ToCpu(gpu_w), cpu_w, 1e-5, "TopKRouting weights");
  }
}

TEST_F(GpuOpsTest, MoeDispatchGroupedMatmulAndCombineMatchTheCpu) {
  const int64_t tokens = 19, k = 8, experts = 128, hidden = 256, width = 64, local = 32;
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int32_t> all(experts);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng_);
    ids.insert(ids.end(), all.begin(), all.begin() + k);
  }
  std::vector<int32_t> local_expert(experts, -1);
  for (int64_t e = 0; e < local; ++e) local_expert[32 + e] = static_cast<int32_t>(e);  // 32 … 63
  const Tensor expert_ids = Tensor::FromInts(ids, {tokens, k});
  Tensor cpu_tokens = Ints(std::vector<int32_t>(tokens * k, -7));
  Tensor cpu_rows = Ints(std::vector<int32_t>(tokens * k, -7));
  Tensor cpu_offsets = Ints(std::vector<int32_t>(local + 1, -7));
  Tensor cpu_counts = Tensor::Zeros(DType::kI64, {experts});
  const int64_t n = ops::MoeDispatch(expert_ids, Ints(local_expert), cpu_tokens, cpu_rows,
                                     cpu_offsets, cpu_counts);
  Tensor gpu_tokens = ToGpu(cpu_tokens.Rows(tokens * k)), gpu_rows = ToGpu(cpu_rows);
  Tensor gpu_offsets = ToGpu(cpu_offsets), gpu_counts = ToGpu(Tensor::Zeros(DType::kI64, {experts}));
  const Tensor gpu_ids = ToGpu(expert_ids);
  EXPECT_EQ(ops::MoeDispatch(gpu_ids, ToGpu(Ints(local_expert)), gpu_tokens, gpu_rows, gpu_offsets,
                             gpu_counts),
            n);
  auto same = [](const Tensor& gpu, const Tensor& cpu, int64_t count, const char* what) {
    const Tensor host = ToCpu(gpu);
    EXPECT_EQ(0, std::memcmp(host.raw_data(), cpu.raw_data(), count * DTypeSize(cpu.dtype())))
        << what;
  };
  same(gpu_tokens, cpu_tokens, n, "dispatched tokens");
  same(gpu_rows, cpu_rows, tokens * k, "dispatched rows");
  same(gpu_offsets, cpu_offsets, local + 1, "expert offsets");
  same(gpu_counts, cpu_counts, experts, "expert counts");

  Tensor x = Random({tokens, hidden}, rng_);
  Tensor gate_up_w = Random({local, 2 * width, hidden}, rng_, -0.1f, 0.1f);
  Tensor xe = Nan({n, hidden});
  ops::GatherRows(x, cpu_tokens.Rows(n), xe);
  Tensor gpu_xe = ToGpu(Nan({n, hidden}));
  ops::GatherRows(ToGpu(x), gpu_tokens.Rows(n), gpu_xe);
  ExpectClose(ToCpu(gpu_xe), xe, 0.0, "GatherRows");
  Tensor gu = Nan({n, 2 * width});
  ops::GroupedLinear(xe, ops::PackLinearWeight(gate_up_w), cpu_offsets, gu);
  Tensor gpu_gu = ToGpu(Nan({n, 2 * width}));
  ops::GroupedLinear(gpu_xe, ToGpu(gate_up_w), gpu_offsets, gpu_gu);
  ExpectClose(ToCpu(gpu_gu), gu, 1e-4, "GroupedLinear");
  // bf16 experts (one grouped cuBLAS call): the CPU's product over the bf16-rounded x and w.
  ops::GroupedLinear(RoundedToBf16(xe), ops::PackLinearWeight(RoundedToBf16(gate_up_w)),
                     cpu_offsets, gu);
  ops::GroupedLinear(gpu_xe, ToGpu(ToBf16(gate_up_w)), gpu_offsets, gpu_gu);
  ExpectClose(ToCpu(gpu_gu), gu, 1e-4, "GroupedLinear bf16");
  Tensor y = Random({n, hidden}, rng_);
  Tensor weights = Random({tokens, k}, rng_, 0.0f, 1.0f);
  Tensor out = Nan({tokens, hidden});
  ops::MoeCombine(y, expert_ids, weights, cpu_rows, out);
  Tensor gpu_out = ToGpu(Nan({tokens, hidden}));
  ops::MoeCombine(ToGpu(y), gpu_ids, ToGpu(weights), gpu_rows, gpu_out);
  ExpectClose(ToCpu(gpu_out), out, 1e-6, "MoeCombine");
}

TEST_F(GpuOpsTest, VocabShardInterleave) {
  Tensor gathered = Random({4 * 3, 50}, rng_);
  Tensor cpu = Nan({3, 200});
  ops::InterleaveShards(gathered, 4, cpu);
  Tensor gpu = ToGpu(Nan({3, 200}));
  ops::InterleaveShards(ToGpu(gathered), 4, gpu);
  ExpectClose(ToCpu(gpu), cpu, 0.0, "InterleaveShards");
}

// The GPU's sampler against the CPU's on the same requests: the same token for every request and
// seed (ops/sampling_math.h's arithmetic on both), the same top-logprob ids, logprobs to float
// rounding. Each row is sampled with `seeds` seeds. Rows of kTopPAlone go back to the host when
// the vocabulary is larger than the GPU sorts.
void ExpectTheCpuSamplersChoices(int64_t vocab, int64_t rows, int seeds) {
  SamplingCases cases = MakeSamplingCases(vocab, rows, 5);
  const std::vector<ops::SampleRequest> one_seed = cases.requests;
  for (int seed = 1; seed < seeds; ++seed) {
    for (ops::SampleRequest request : one_seed) {
      request.options.seed += 7919 * seed;
      cases.requests.push_back(request);
    }
  }
  ops::BatchSampler cpu;
  ops::BatchSampler gpu;
  const std::vector<ops::SampleResult> want = cpu.Sample(cases.logits, cases.requests);
  const std::vector<ops::SampleResult> got = gpu.Sample(ToGpu(cases.logits), cases.requests);
  ASSERT_EQ(got.size(), want.size());
  int64_t top_p_alone = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const ops::SampleRequest& request = cases.requests[i];
    const std::string where = "vocab " + std::to_string(vocab) + ", request " + std::to_string(i) +
                              " (option set " + std::to_string(request.row % kNumOptionSets) + ")";
    top_p_alone += request.row % kNumOptionSets == kTopPAlone;
    EXPECT_EQ(got[i].token_id, want[i].token_id) << where;
    EXPECT_NEAR(got[i].logprob, want[i].logprob, 2e-5) << where;
    ASSERT_EQ(got[i].top.size(), want[i].top.size()) << where;
    for (size_t j = 0; j < got[i].top.size(); ++j) {
      EXPECT_EQ(got[i].top[j].token_id, want[i].top[j].token_id) << where << ", top " << j;
      EXPECT_NEAR(got[i].top[j].logprob, want[i].top[j].logprob, 2e-5) << where << ", top " << j;
    }
  }
  const int64_t copied_back = vocab > kernels::kMaxDeviceTopK ? top_p_alone : 0;
  EXPECT_EQ(gpu.rows_copied_back(), copied_back);
  EXPECT_EQ(gpu.rows_on_device(), static_cast<int64_t>(got.size()) - copied_back);
}

TEST_F(GpuOpsTest, SamplerOnTheGpuChoosesTheCpuSamplersTokens) {
  ExpectTheCpuSamplersChoices(1000, 44, 8);
  ExpectTheCpuSamplersChoices(262144, 44, 8);  // Gemma 4's vocabulary
}

// Small shapes for compute-sanitizer (memcheck, racecheck): every kernel once.
class GpuOpsSanitizerTest : public GpuOpsTest {};

TEST_F(GpuOpsSanitizerTest, AttentionOnSmallShapes) {
  RunPagedAttention({32, 4, 2, 0, DType::kF32}, rng_);
  RunPagedAttention({64, 2, 1, 24, DType::kBF16}, rng_);
  RunPagedAttention({64, 4, 2, 0, DType::kBF16, true}, rng_);
  RunPagedAttention({32, 4, 2, 16, DType::kBF16, false, {0, 40}, {64, 8}, 1e-2}, rng_);  // tensor cores
}

TEST_F(GpuOpsSanitizerTest, NormRopeRoutingDispatchAndLinearOnSmallShapes) {
  Tensor x = ToGpu(Random({3, 64}, rng_));
  ops::RmsNorm(x, ToGpu(Random({64}, rng_)), 1e-6f, x);
  Tensor residual = ToGpu(Random({3, 64}, rng_));
  Tensor next = ToGpu(Nan({3, 64}));
  ops::AddRmsNorm(x, ToGpu(Random({64}, rng_)), 0.5f, ToGpu(Random({64}, rng_)), 1e-6f, residual,
                  next);
  Tensor q = ToGpu(Random({2, 2, 32}, rng_));
  ops::Rotary(32, 16, 1e4, Gpu()).Apply(q, ToGpu(Ints({5, 9})));
  RunPrepareAttention({64, 8, 2, 1, true, DType::kBF16}, rng_);
  Tensor ids = ToGpu(Tensor::Empty(DType::kI32, {3, 2}));
  Tensor weights = ToGpu(Nan({3, 2}));
  ops::TopKRouting(ToGpu(Random({3, 8}, rng_)), ToGpu(Random({8}, rng_)), 2, ids, weights);
  Tensor tokens = ToGpu(Ints(std::vector<int32_t>(6))), rows = ToGpu(Ints(std::vector<int32_t>(6)));
  Tensor offsets = ToGpu(Ints(std::vector<int32_t>(9))), counts = ToGpu(Tensor::Zeros(DType::kI64, {8}));
  const int64_t n = ops::MoeDispatch(ids, ToGpu(Ints({0, 1, 2, 3, 4, 5, 6, 7})), tokens, rows,
                                     offsets, counts);
  EXPECT_EQ(n, 6);
  Tensor y = ToGpu(Nan({3, 16}));
  ops::Linear(x, ToGpu(ToBf16(Random({16, 64}, rng_))), y);
  EXPECT_FALSE(std::isnan(ToCpu(y).data<float>()[0]));
}

TEST_F(GpuOpsSanitizerTest, SamplerOnSmallShapes) { ExpectTheCpuSamplersChoices(300, 22, 1); }

}  // namespace
}  // namespace gemmaserve::testing
