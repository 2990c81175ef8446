// Workspace: where one step's activations live, carved from memory allocated once at start-up.
//
// A bump allocator over one buffer on one device. Take() hands out the next aligned bytes as a
// Tensor; a Scope gives back everything taken since it opened (the forward pass opens one per
// layer, so the buffer holds one layer's activations, not the whole model's); Reset() empties
// the workspace between steps. Its owner sizes it from the step's token budget (see
// model::Gemma4Model::WorkspaceBytes). A step that needs more than that (logits for more rows than
// planned, or a whole long prompt in one step, say) is still served: each Take that does not fit
// gets its own allocation, which lives until its Scope closes (or the next Reset) and is counted
// in num_overflows(), so a steady-state step allocates nothing and a rare large one is slower,
// never wrong.
//
// A Tensor taken from the workspace is valid until the Scope that was open when it was taken
// closes, or the next Reset; it holds a reference to the buffer, so a stale one reads old
// activations rather than freed memory.
//
// Thread-safety: not thread-safe; one thread (the step's) uses a workspace.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/tensor.h"

namespace gemmaserve {

class Workspace {
 public:
  // Start of every tensor taken, in bytes: a cache line on the CPU, and what GPU kernels need for
  // vectorised loads.
  static constexpr int64_t kAlignment = 256;

  // Allocates `capacity_bytes` on `device` and zeroes them, so that the memory is resident from
  // start-up: a shortage shows then rather than in a request, and the first long step does not
  // pay for faulting its pages in (on the CPU a 16,384-token step's 2.5 GB did, inside the step).
  Workspace(int64_t capacity_bytes, Device device);

  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // An uninitialised tensor of `dtype` and `shape` on the workspace's device.
  Tensor Take(DType dtype, Shape shape);

  // Gives back, when it ends, what was taken while it was open, overflow allocations included (so
  // a step larger than planned holds one layer's overflow at a time, not every layer's). Scopes
  // nest.
  class Scope {
   public:
    explicit Scope(Workspace& workspace)
        : workspace_(workspace),
          offset_(workspace.offset_),
          num_overflow_(workspace.overflow_.size()) {}
    ~Scope() {
      workspace_.offset_ = offset_;
      workspace_.overflow_.resize(num_overflow_);
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Workspace& workspace_;
    const int64_t offset_;
    const size_t num_overflow_;
  };

  // Empties the workspace and frees this step's overflow allocations.
  void Reset();

  const Device& device() const { return device_; }
  int64_t capacity_bytes() const { return capacity_bytes_; }
  // The most bytes of the buffer in use at once since construction.
  int64_t high_water_bytes() const { return high_water_bytes_; }
  // Takes that did not fit since construction.
  int64_t num_overflows() const { return num_overflows_; }
  // Overflow allocations held now (until their Scope closes or the next Reset).
  int64_t live_overflows() const { return static_cast<int64_t>(overflow_.size()); }

  // Bytes a tensor of `dtype` and `shape` takes in a workspace, alignment included: capacity
  // planners add these up.
  static int64_t BytesFor(DType dtype, const Shape& shape);

 private:
  const Device device_;
  const int64_t capacity_bytes_;
  Tensor buffer_;  // the whole capacity (typed i32 only to have a dtype)
  char* base_ = nullptr;  // the first aligned byte of buffer_
  int64_t offset_ = 0;
  int64_t high_water_bytes_ = 0;
  int64_t num_overflows_ = 0;
  std::vector<Tensor> overflow_;  // this step's tensors that did not fit
};

}  // namespace gemmaserve
