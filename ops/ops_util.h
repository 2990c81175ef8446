// Shape checks shared by the ops: each op validates its tensors once at its boundary and then runs
// on raw pointers. A failed check is a caller bug (shapes are validated per step upstream), so it
// is a CHECK, not a Status.
#pragma once

#include "common/check.h"
#include "common/tensor.h"

namespace gemmaserve::ops {

inline void CheckCpuF32(const Tensor& t, const char* what) {
  CHECK(t.device().is_cpu()) << what << ": " << t.DebugString()
                             << " is on a device this op has no kernel for yet";
  CHECK(t.dtype() == DType::kF32) << what << ": expected f32, got " << t.DebugString();
}

inline void CheckShape(const Tensor& t, const Shape& expected, const char* what) {
  CHECK(t.shape() == expected) << what << ": " << t.DebugString() << ", expected "
                               << ShapeToString(expected);
}

}  // namespace gemmaserve::ops
