// Checkpoint: read-only access to the tensors of a Hugging Face safetensors checkpoint directory,
// either one `model.safetensors` or shards listed by `model.safetensors.index.json`. Files are
// memory-mapped; tensors are borrowed views of the maps (nothing is copied) and keep them alive.
//
// Every header is validated when the checkpoint is opened: header length within the file, JSON
// well formed, data offsets inside the data section and consistent with shape × dtype size, index
// entries naming shards that exist and tensors those shards hold. Corrupt files are DATA_LOSS,
// missing files and tensors NOT_FOUND. Tensors of a dtype gemmaserve has no DType for (F8_E4M3,
// F64, an unknown string, ...) do not fail the open, so that e.g. a vision tower in another dtype
// is harmless; Info and Get reject them with UNIMPLEMENTED. Every error names the file and, where
// there is one, the tensor.
//
// With an index, the index is authoritative: only the tensors it lists are visible, each from the
// shard it names. Without one, every tensor of model.safetensors is visible (vision and audio
// towers included; skipping them is the loader's job).
//
// Thread-safety: immutable after Open; all methods are safe to call concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "common/tensor.h"

namespace gemmaserve::model {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kBF16;
  Shape shape;
  std::string file;         // path of the shard holding it
  size_t offset_bytes = 0;  // from the start of the file
  size_t size_bytes = 0;
};

class Checkpoint {
 public:
  // Opens DIR/model.safetensors.index.json and its shards if the index exists, else
  // DIR/model.safetensors; NOT_FOUND naming DIR when there is neither.
  static absl::StatusOr<Checkpoint> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool Contains(const std::string& name) const;
  std::vector<std::string> TensorNames() const;  // sorted
  absl::StatusOr<TensorInfo> Info(const std::string& name) const;

  // A borrowed CPU tensor over the mmap. NOT_FOUND naming the tensor and the directory.
  absl::StatusOr<Tensor> Get(const std::string& name) const;
  // As Get, and INVALID_ARGUMENT unless the shape is `expected`:
  // "tensor model.language_model.layers.3.mlp.up_proj.weight in DIR/model.safetensors:
  //  shape [512,128], expected [512,64]".
  absl::StatusOr<Tensor> Get(const std::string& name, const Shape& expected) const;

 private:
  struct Entry {
    TensorInfo info;
    std::shared_ptr<MappedFile> file;
    std::string unsupported_dtype;  // the safetensors dtype string when it has no DType, else ""
  };

  // Adds the shards listed by the index at `index_path`.
  absl::Status AddShards(const std::string& index_path);
  // Maps the safetensors file at `path` and adds its tensors (only those in `only`, when not null).
  absl::Status AddFile(const std::string& path, const absl::flat_hash_set<std::string>* only);
  // The entry of a readable tensor: NOT_FOUND or UNIMPLEMENTED (unsupported dtype) otherwise.
  absl::StatusOr<const Entry*> Find(const std::string& name) const;

  std::string dir_;
  absl::flat_hash_map<std::string, Entry> entries_;
};

}  // namespace gemmaserve::model
