#include "model/safetensors_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::model {
namespace {

using nlohmann::json;

absl::Status IoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// An stdio file closed on destruction; Close() reports the final flush.
class OutputFile {
 public:
  static absl::StatusOr<std::unique_ptr<OutputFile>> Create(const std::string& path) {
    FILE* file = std::fopen(path.c_str(), "wb");
    if (file == nullptr) return IoError("create", path);
    return std::unique_ptr<OutputFile>(new OutputFile(path, file));
  }
  ~OutputFile() {
    if (file_ != nullptr) std::fclose(file_);
  }
  absl::Status Append(const char* data, size_t size) {
    if (std::fwrite(data, 1, size, file_) != size) return IoError("write", path_);
    return absl::OkStatus();
  }
  absl::Status Close() {
    const int result = std::fclose(file_);
    file_ = nullptr;
    return result == 0 ? absl::OkStatus() : IoError("close", path_);
  }

 private:
  OutputFile(std::string path, FILE* file) : path_(std::move(path)), file_(file) {}
  std::string path_;
  FILE* file_;
};

std::string ShardFileName(size_t index, size_t count) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, count);
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string temp_path = path + ".tmp";
  ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> file, OutputFile::Create(temp_path));
  RETURN_IF_ERROR(file->Append(contents.data(), contents.size()));
  RETURN_IF_ERROR(file->Close());
  if (std::rename(temp_path.c_str(), path.c_str()) != 0) return IoError("rename to", path);
  return absl::OkStatus();
}

const char* SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF32:
      return "F32";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

SafetensorsWriter::SafetensorsWriter(SafetensorsWriterOptions options) : options_(options) {
  options_.chunk_bytes = std::max<size_t>(8, options_.chunk_bytes / 8 * 8);
}

absl::Status SafetensorsWriter::Add(const std::string& name, DType dtype, const Shape& shape,
                                    FillFn fill) {
  if (name == "__metadata__") {
    return absl::InvalidArgumentError(
        "safetensors: \"__metadata__\" is reserved, not a tensor name");
  }
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: tensor ", name, ": negative dimension in ", ShapeToString(shape)));
    }
  }
  if (!names_.insert(name).second) {
    return absl::AlreadyExistsError(absl::StrCat("safetensors: tensor ", name, " added twice"));
  }
  const size_t size_bytes = static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
  tensors_.push_back(PendingTensor{name, dtype, shape, size_bytes, std::move(fill)});
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Add(const std::string& name, const Tensor& tensor) {
  if (!tensor.device().is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors: tensor ", name, " is on ",
                                                   tensor.device().ToString(), ", not the CPU"));
  }
  return Add(name, tensor.dtype(), tensor.shape(),
             [tensor](size_t begin_bytes, size_t size_bytes, char* dst) {
               std::memcpy(dst, static_cast<const char*>(tensor.raw_data()) + begin_bytes,
                           size_bytes);
             });
}

std::vector<std::vector<size_t>> SafetensorsWriter::PlanShards() const {
  std::vector<std::vector<size_t>> shards(1);
  size_t shard_bytes = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const size_t size = tensors_[i].size_bytes;
    if (options_.max_shard_bytes > 0 && !shards.back().empty() &&
        shard_bytes + size > options_.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += size;
  }
  return shards;
}

absl::Status SafetensorsWriter::WriteFile(const std::string& path,
                                          const std::vector<size_t>& tensors,
                                          std::vector<char>& buffer) const {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  size_t offset = 0;
  for (size_t i : tensors) {
    const PendingTensor& tensor = tensors_[i];
    header[tensor.name] = {{"dtype", SafetensorsDTypeName(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.size_bytes}}};
    offset += tensor.size_bytes;
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const json::exception& e) {  // a tensor name that is not valid UTF-8
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors header for ", path, ": ", e.what()));
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  char length[8];
  for (int b = 0; b < 8; ++b) length[b] = static_cast<char>((header_text.size() >> (8 * b)) & 0xff);

  const std::string temp_path = path + ".tmp";
  ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> file, OutputFile::Create(temp_path));
  RETURN_IF_ERROR(file->Append(length, sizeof(length)));
  RETURN_IF_ERROR(file->Append(header_text.data(), header_text.size()));
  // Tensors go in the order the header's data_offsets were assigned: declaration order.
  for (size_t i : tensors) {
    const PendingTensor& tensor = tensors_[i];
    for (size_t begin = 0; begin < tensor.size_bytes; begin += buffer.size()) {
      const size_t size = std::min(buffer.size(), tensor.size_bytes - begin);
      tensor.fill(begin, size, buffer.data());
      RETURN_IF_ERROR(file->Append(buffer.data(), size));
    }
  }
  RETURN_IF_ERROR(file->Close());
  if (std::rename(temp_path.c_str(), path.c_str()) != 0) return IoError("rename to", path);
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsWriteSummary> SafetensorsWriter::Write(const std::string& dir) const {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::InternalError(absl::StrCat("create directory ", dir, ": ", error.message()));
  }
  const std::vector<std::vector<size_t>> shards = PlanShards();
  // A file of the other layout left by an earlier Write would shadow or confuse this one.
  std::filesystem::remove(absl::StrCat(dir, "/model.safetensors.index.json"), error);
  std::filesystem::remove(absl::StrCat(dir, "/model.safetensors"), error);
  std::vector<char> buffer(options_.chunk_bytes);
  SafetensorsWriteSummary summary;
  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name =
        shards.size() == 1 ? std::string("model.safetensors") : ShardFileName(s, shards.size());
    const std::string path = absl::StrCat(dir, "/", name);
    RETURN_IF_ERROR(WriteFile(path, shards[s], buffer));
    summary.files.push_back(path);
    summary.total_file_bytes += std::filesystem::file_size(path, error);
    for (size_t i : shards[s]) {
      weight_map[tensors_[i].name] = name;
      summary.total_tensor_bytes += tensors_[i].size_bytes;
      summary.num_elements += NumElements(tensors_[i].shape);
    }
  }
  if (shards.size() > 1) {
    const json index = {{"metadata", {{"total_size", summary.total_tensor_bytes}}},
                        {"weight_map", weight_map}};
    const std::string path = absl::StrCat(dir, "/model.safetensors.index.json");
    RETURN_IF_ERROR(WriteFileAtomically(path, index.dump(2) + "\n"));
    summary.files.push_back(path);
  }
  return summary;
}

}  // namespace gemmaserve::model
