// Shape checks shared by the ops: each op validates its tensors once at its boundary and then runs
// on raw pointers. A failed check is a caller bug (shapes are validated per step upstream), so it
// is a CHECK, not a Status.
#pragma once

#include <omp.h>

#include <cstdint>

#include "common/check.h"
#include "common/tensor.h"

namespace gemmaserve::ops {

// Element counts below which an element-wise op runs on one thread: a parallel region costs a
// few microseconds, more than it saves on small tensors.
inline constexpr int64_t kParallelElements = 1 << 14;

// Runs fn(begin, end) over [0, n): split into one contiguous range per OpenMP thread when
// `parallel` and the process has more than one thread, else once, on this thread. libgomp
// allocates a thread team for every parallel region that runs on one thread (an `if` clause that
// is false, or OMP_NUM_THREADS=1), so the hot path decides before entering a region.
template <typename Fn>
void ParallelRanges(int64_t n, bool parallel, Fn fn) {
  if (!parallel || omp_get_max_threads() == 1) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t thread = omp_get_thread_num();
    fn(n * thread / threads, n * (thread + 1) / threads);
  }
}

inline void CheckCpuF32(const Tensor& t, const char* what) {
  CHECK(t.device().is_cpu()) << what << ": " << t.DebugString()
                             << " is on a device this op has no kernel for yet";
  CHECK(t.dtype() == DType::kF32) << what << ": expected f32, got " << t.DebugString();
}

inline void CheckCpuI32(const Tensor& t, const char* what) {
  CHECK(t.device().is_cpu()) << what << ": " << t.DebugString()
                             << " is on a device this op has no kernel for yet";
  CHECK(t.dtype() == DType::kI32) << what << ": expected i32, got " << t.DebugString();
}

inline void CheckShape(const Tensor& t, const Shape& expected, const char* what) {
  CHECK(t.shape() == expected) << what << ": " << t.DebugString() << ", expected "
                               << ShapeToString(expected);
}

}  // namespace gemmaserve::ops
