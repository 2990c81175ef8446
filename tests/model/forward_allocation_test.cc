// A steady-state decode step allocates nothing on the heap: every activation comes from the
// model's workspace, the step's metadata borrows the batch's vectors, and the ops keep their
// scratch. Counted by interposing the C allocator for this whole binary (operator new, OpenMP
// and OpenBLAS all allocate through it), so any allocation, by any thread, is seen.
#include <atomic>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/model/golden_reference.h"
#include "tests/model/tiny_model.h"

extern "C" {
void* __libc_malloc(size_t size);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* ptr, size_t size);
void* __libc_memalign(size_t alignment, size_t size);
}

namespace {

std::atomic<bool> g_counting{false};
std::atomic<int64_t> g_allocations{0};

void Count() {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
}

}  // namespace

extern "C" {
void* malloc(size_t size) {
  Count();
  return __libc_malloc(size);
}
void* calloc(size_t count, size_t size) {
  Count();
  return __libc_calloc(count, size);
}
void* realloc(void* ptr, size_t size) {
  Count();
  return __libc_realloc(ptr, size);
}
void* memalign(size_t alignment, size_t size) {
  Count();
  return __libc_memalign(alignment, size);
}
void* aligned_alloc(size_t alignment, size_t size) {
  Count();
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** ptr, size_t alignment, size_t size) {
  Count();
  *ptr = __libc_memalign(alignment, size);
  return *ptr == nullptr ? 12 /* ENOMEM */ : 0;
}
}

namespace gemmaserve::testing {
namespace {

// Allocations made while `fn` runs.
template <typename Fn>
int64_t AllocationsDuring(Fn fn) {
  g_allocations = 0;
  g_counting = true;
  fn();
  g_counting = false;
  return g_allocations.load();
}

class ForwardAllocationTest : public ::testing::TestWithParam<std::string> {};

TEST(AllocationCounterTest, SeesOperatorNewAndMalloc) {
  std::vector<int>* volatile vector = nullptr;
  EXPECT_EQ(AllocationsDuring([&] { vector = new std::vector<int>(100); }), 2);  // object, data
  delete vector;
  void* volatile memory = nullptr;
  EXPECT_EQ(AllocationsDuring([&] { memory = std::malloc(10); }), 1);
  std::free(memory);
}

TEST_P(ForwardAllocationTest, SteadyStateDecodeStepsAllocateNothing) {
  auto tiny = TinyModel::Load(GetParam());
  const std::vector<int32_t> prompt = LoadGoldenReference(GetParam()).inputs[0];
  model::ForwardBatch batch;
  tiny->Step(prompt, 0, false, batch);
  tiny->model->Forward(batch, *tiny->cache);
  int64_t position = static_cast<int64_t>(prompt.size());
  // Warm-up: the first decode steps size the batch's vectors and the ops' scratch.
  for (int i = 0; i < 2; ++i, ++position) {
    tiny->Step({17}, position, false, batch);
    tiny->model->Forward(batch, *tiny->cache);
  }
  for (int i = 0; i < 8; ++i, ++position) {
    tiny->Step({static_cast<int32_t>(20 + i)}, position, false, batch);
    EXPECT_EQ(AllocationsDuring([&] { tiny->model->Forward(batch, *tiny->cache); }), 0)
        << "decode step at position " << position;
  }
  EXPECT_EQ(tiny->model->workspace().num_overflows(), 0);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, ForwardAllocationTest,
                         ::testing::ValuesIn(TinyModelNames()), TinyModelTestName());

}  // namespace
}  // namespace gemmaserve::testing
