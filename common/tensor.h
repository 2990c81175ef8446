// Tensor: a dense, contiguous, row-major array with a dtype, a shape and a device.
//
// Storage is shared: copies of a Tensor alias the same bytes. It is either owned (allocated by
// Tensor::Empty and freed with the last reference) or borrowed (Tensor::Borrow over memory that
// someone else owns, e.g. an mmap of a checkpoint, kept alive through `keep_alive`). There is no
// autograd and no broadcasting: ops take tensors and check shapes once at their boundary.
//
// Thread-safety: a Tensor is a value; concurrent reads are safe, concurrent writes to the same
// storage are the caller's business.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "common/check.h"
#include "common/dtype.h"

namespace gemmaserve {

struct Device {
  enum class Type { kCpu, kCuda };
  Type type = Type::kCpu;
  int ordinal = 0;  // CUDA device index; 0 for the CPU

  static Device Cpu() { return Device{}; }
  static Device Cuda(int ordinal) { return Device{Type::kCuda, ordinal}; }
  bool is_cpu() const { return type == Type::kCpu; }
  bool is_cuda() const { return type == Type::kCuda; }
  bool operator==(const Device& other) const {
    return type == other.type && ordinal == other.ordinal;
  }
  std::string ToString() const;  // "cpu" or "cuda:N"
};

// Inline up to rank 6, so that making, viewing and slicing tensors allocates nothing on the heap
// (the forward pass does this for every op of every step).
using Shape = absl::InlinedVector<int64_t, 6>;

std::string ShapeToString(const Shape& shape);  // "[2,3]"
int64_t NumElements(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;  // undefined: no storage

  // Owned, uninitialised storage. CPU memory is 64-byte aligned.
  static Tensor Empty(DType dtype, Shape shape, Device device = Device::Cpu());
  static Tensor Zeros(DType dtype, Shape shape, Device device = Device::Cpu());
  // Borrowed storage at `data`; `keep_alive` (may be null) is held as long as any alias lives.
  static Tensor Borrow(void* data, DType dtype, Shape shape, std::shared_ptr<const void> keep_alive,
                       Device device = Device::Cpu());
  // A CPU f32 tensor holding `values`.
  static Tensor FromVector(const std::vector<float>& values, Shape shape);
  // A CPU i32 tensor holding `values`.
  static Tensor FromInts(const std::vector<int32_t>& values, Shape shape);
  // A CPU i32 tensor [values.size()] that borrows `values`' storage: valid while the vector lives
  // and is not resized.
  static Tensor BorrowVector(const std::vector<int32_t>& values);

  bool defined() const { return data_ != nullptr || NumElements(shape_) == 0; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the back
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  const Device& device() const { return device_; }

  void* raw_data() const { return data_; }
  // The shared owner of the storage (null for a borrow without keep-alive).
  const std::shared_ptr<const void>& storage() const { return owner_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_);
  }

  // The same storage seen with another shape of equal element count.
  Tensor View(Shape shape) const;
  // Rows [begin, end) of dimension 0, aliasing this tensor's storage.
  Tensor Slice(int64_t begin, int64_t end) const;
  // The first `rows` rows: Slice(0, rows).
  Tensor Rows(int64_t rows) const { return Slice(0, rows); }
  // Element-wise copy into an owned CPU f32 tensor (f32, bf16 or f16 input).
  Tensor ToF32() const;

  std::string DebugString() const;  // "bf16[512,128]@cpu"

 private:
  std::shared_ptr<const void> owner_;
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Shape shape_;
  Device device_;
};

}  // namespace gemmaserve
