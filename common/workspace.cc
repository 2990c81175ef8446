#include "common/workspace.h"

#include <algorithm>

#include "spdlog/spdlog.h"

namespace gemmaserve {

Workspace::Workspace(int64_t capacity_bytes, Device device)
    : device_(device), capacity_bytes_(BytesFor(DType::kI32, {capacity_bytes / 4})) {
  CHECK_GE(capacity_bytes, 0);
  // One alignment unit more than the capacity, so that the first tensor can start aligned
  // whatever alignment the allocator gives (64 bytes on the CPU).
  buffer_ = Tensor::Zeros(DType::kI32, {(capacity_bytes_ + kAlignment) / 4}, device);
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer_.raw_data());
  base_ = static_cast<char*>(buffer_.raw_data()) + (kAlignment - address % kAlignment) % kAlignment;
}

int64_t Workspace::BytesFor(DType dtype, const Shape& shape) {
  const int64_t bytes = NumElements(shape) * static_cast<int64_t>(DTypeSize(dtype));
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

Tensor Workspace::Take(DType dtype, Shape shape) {
  const int64_t bytes = BytesFor(dtype, shape);
  if (offset_ + bytes > capacity_bytes_) {
    if (num_overflows_++ == 0) {
      spdlog::debug("workspace of {} bytes on {} overflows: {} more needed", capacity_bytes_,
                    device_.ToString(), offset_ + bytes - capacity_bytes_);
    }
    overflow_.push_back(Tensor::Empty(dtype, std::move(shape), device_));
    return overflow_.back();
  }
  char* data = base_ + offset_;
  offset_ += bytes;
  high_water_bytes_ = std::max(high_water_bytes_, offset_);
  return Tensor::Borrow(data, dtype, std::move(shape), buffer_.storage(), device_);
}

void Workspace::Reset() {
  offset_ = 0;
  overflow_.clear();
}

}  // namespace gemmaserve
