// SafetensorsWriter: writes a checkpoint directory in the Hugging Face safetensors layout that
// Checkpoint reads: either one `model.safetensors`, or shards `model-0000N-of-0000M.safetensors`
// of at most `max_shard_bytes` of tensor data each plus `model.safetensors.index.json`
// ({"metadata": {"total_size": ...}, "weight_map": {tensor: shard}}).
//
// Tensors are declared first (name, dtype, shape and a source of bytes) and written by Write(),
// which streams each tensor in chunks of `chunk_bytes` through one reused buffer, so a multi-GB
// checkpoint never has to fit in memory. Each header is padded with spaces to a multiple of 8
// bytes, as HF does, so tensor data stays 8-byte aligned when the tensors are.
//
// Every file is written under a temporary name and renamed when complete, so an interrupted
// Write never leaves a file that looks valid.
//
// Ownership: the writer holds the callbacks and (shared) tensors until it is destroyed.
// Thread-safety: none; use from one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace gemmaserve::model {

struct SafetensorsWriterOptions {
  // Largest sum of tensor bytes per shard; 0 = one model.safetensors. A tensor larger than this
  // gets a shard of its own. When everything fits in one shard no index is written.
  size_t max_shard_bytes = 0;
  // Bytes per fill call and size of the one write buffer (rounded down to a multiple of 8).
  size_t chunk_bytes = 16 << 20;
};

struct SafetensorsWriteSummary {
  std::vector<std::string> files;  // paths written, safetensors shards then the index if any
  size_t total_tensor_bytes = 0;   // sum of tensor data bytes (the index's total_size)
  size_t total_file_bytes = 0;     // sum of the safetensors file sizes, headers included
  int64_t num_elements = 0;        // sum of tensor element counts
};

class SafetensorsWriter {
 public:
  // Writes bytes [begin_bytes, begin_bytes + size_bytes) of a tensor's row-major data to `dst`.
  // begin_bytes and size_bytes are multiples of the element size.
  using FillFn = std::function<void(size_t begin_bytes, size_t size_bytes, char* dst)>;

  explicit SafetensorsWriter(SafetensorsWriterOptions options = {});

  // Declares a tensor whose bytes `fill` produces while writing. INVALID_ARGUMENT for a negative
  // dimension or the reserved name "__metadata__", ALREADY_EXISTS for a repeated name.
  absl::Status Add(const std::string& name, DType dtype, const Shape& shape, FillFn fill);
  // Declares a CPU tensor; the writer keeps a reference and copies its bytes while writing.
  absl::Status Add(const std::string& name, const Tensor& tensor);

  // Creates `dir` if needed and writes the files. Errors name the file.
  absl::StatusOr<SafetensorsWriteSummary> Write(const std::string& dir) const;

 private:
  struct PendingTensor {
    std::string name;
    DType dtype;
    Shape shape;
    size_t size_bytes;
    FillFn fill;
  };

  // Splits the tensors, in declaration order, into shards of indices.
  std::vector<std::vector<size_t>> PlanShards() const;
  absl::Status WriteFile(const std::string& path, const std::vector<size_t>& tensors,
                         std::vector<char>& buffer) const;

  SafetensorsWriterOptions options_;
  std::vector<PendingTensor> tensors_;
  absl::flat_hash_set<std::string> names_;
};

// Writes `contents` to `path` through `path`.tmp and a rename. INTERNAL naming the file on failure.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);

// The safetensors dtype string of `dtype`: "BF16", "F16", "F32", "I32", "I64".
const char* SafetensorsDTypeName(DType dtype);

}  // namespace gemmaserve::model
