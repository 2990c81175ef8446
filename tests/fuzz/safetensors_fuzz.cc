// Checkpoint::Open on a directory built from the input: model.safetensors (8-byte header length,
// JSON header, data) and, when the first byte asks, a model.safetensors.index.json naming shards
// in it; then Info and Get of every tensor the open accepted, touching each tensor's first and
// last byte, so a view that leaves the mapped file is an ASan finding.
#include <fuzzer/FuzzedDataProvider.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "model/checkpoint.h"

namespace {

const std::string& Directory() {
  static const std::string dir = [] {
    char path[] = "/tmp/gemmaserve-fuzz-safetensors-XXXXXX";
    if (mkdtemp(path) == nullptr) std::abort();
    return std::string(path);
  }();
  return dir;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  const std::string& dir = Directory();
  const bool with_index = input.ConsumeBool();
  const std::string index = with_index ? input.ConsumeRandomLengthString(4096) : "";
  const std::string shard = input.ConsumeRemainingBytesAsString();
  WriteFile(dir + "/model.safetensors", shard);
  // A second shard an index may name, so multi-shard indexes are reachable.
  WriteFile(dir + "/model-00002-of-00002.safetensors", shard);
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (with_index) {
    WriteFile(index_path, index);
  } else {
    std::remove(index_path.c_str());
  }

  absl::StatusOr<gemmaserve::model::Checkpoint> checkpoint =
      gemmaserve::model::Checkpoint::Open(dir);
  if (!checkpoint.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const std::string& name : checkpoint->TensorNames()) {
    if (!checkpoint->Info(name).ok()) continue;
    absl::StatusOr<gemmaserve::Tensor> tensor = checkpoint->Get(name);
    if (!tensor.ok() || tensor->nbytes() == 0) continue;
    const auto* bytes = static_cast<const uint8_t*>(tensor->raw_data());
    sink = sink + bytes[0] + bytes[tensor->nbytes() - 1];
  }
  return 0;
}
