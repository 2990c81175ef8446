#include "model/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace gemmaserve::model {
namespace {

using nlohmann::json;

constexpr char kSingleFileName[] = "model.safetensors";
constexpr char kIndexFileName[] = "model.safetensors.index.json";

// The dtype strings of the safetensors format with their element sizes. Those without a DType are
// accepted in a header (their offsets are still checked) and rejected when the tensor is read.
struct SafetensorsDType {
  const char* name;
  size_t size_bytes;
  std::optional<DType> dtype;
};
constexpr SafetensorsDType kSafetensorsDTypes[] = {
    {"BF16", 2, DType::kBF16},    {"F16", 2, DType::kF16},  {"F32", 4, DType::kF32},
    {"I32", 4, DType::kI32},      {"I64", 8, DType::kI64},  {"BOOL", 1, std::nullopt},
    {"U8", 1, std::nullopt},      {"I8", 1, std::nullopt},  {"F8_E5M2", 1, std::nullopt},
    {"F8_E4M3", 1, std::nullopt}, {"I16", 2, std::nullopt}, {"U16", 2, std::nullopt},
    {"U32", 4, std::nullopt},     {"F64", 8, std::nullopt}, {"U64", 8, std::nullopt},
};

const SafetensorsDType* FindSafetensorsDType(const std::string& name) {
  for (const SafetensorsDType& candidate : kSafetensorsDTypes) {
    if (name == candidate.name) return &candidate;
  }
  return nullptr;
}

absl::Status TensorError(absl::StatusCode code, const std::string& name, const std::string& path,
                         const std::string& problem) {
  return absl::Status(code, absl::StrCat("tensor ", name, " in ", path, ": ", problem));
}

absl::Status FileError(const std::string& path, const std::string& problem) {
  return absl::DataLossError(absl::StrCat(path, ": ", problem));
}

// A header entry as parsed, before it is bound to its mapped file.
struct ParsedEntry {
  TensorInfo info;
  std::string unsupported_dtype;
};

absl::StatusOr<Shape> ParseShape(const json& value) {
  if (!value.is_array())
    return absl::DataLossError(absl::StrCat("shape ", value.dump(), " is not a list"));
  Shape shape;
  for (const json& dim : value) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < 0) {
      return absl::DataLossError(
          absl::StrCat("shape ", value.dump(), " is not a list of non-negative integers"));
    }
    shape.push_back(dim.get<int64_t>());
  }
  return shape;
}

// numel × element size, or nullopt on overflow.
std::optional<size_t> ByteSize(const Shape& shape, size_t element_bytes) {
  size_t total = element_bytes;
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(total, static_cast<size_t>(dim), &total)) return std::nullopt;
  }
  return total;
}

// Validates one header entry against a data section of `data_size` bytes at `data_begin`.
absl::StatusOr<ParsedEntry> ParseEntry(const std::string& path, const std::string& name,
                                       const json& value, size_t data_begin, size_t data_size) {
  auto error = [&](const std::string& problem) {
    return TensorError(absl::StatusCode::kDataLoss, name, path, problem);
  };
  if (!value.is_object())
    return error(absl::StrCat("header entry ", value.dump(), " is not an object"));
  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string()) return error("no dtype string");
  const auto shape_it = value.find("shape");
  if (shape_it == value.end()) return error("no shape");
  absl::StatusOr<Shape> shape = ParseShape(*shape_it);
  if (!shape.ok()) return error(std::string(shape.status().message()));
  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return error("data_offsets is not a list of two non-negative integers");
  }
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  if (begin > end || end > data_size) {
    return error(absl::StrCat("data_offsets [", begin, ",", end,
                              "] out of range of the data section (", data_size, " bytes)"));
  }

  ParsedEntry entry;
  entry.info.name = name;
  entry.info.shape = *std::move(shape);
  entry.info.file = path;
  entry.info.offset_bytes = data_begin + begin;
  entry.info.size_bytes = end - begin;
  const std::string dtype_name = dtype_it->get<std::string>();
  const SafetensorsDType* dtype = FindSafetensorsDType(dtype_name);
  if (dtype == nullptr || !dtype->dtype.has_value()) entry.unsupported_dtype = dtype_name;
  if (dtype != nullptr) {
    if (dtype->dtype.has_value()) entry.info.dtype = *dtype->dtype;
    const std::optional<size_t> expected = ByteSize(entry.info.shape, dtype->size_bytes);
    if (!expected.has_value() || *expected != entry.info.size_bytes) {
      return error(absl::StrCat("data_offsets [", begin, ",", end, "] hold ", end - begin,
                                " bytes, but shape ", ShapeToString(entry.info.shape), " of ",
                                dtype_name, " needs ",
                                expected.has_value() ? absl::StrCat(*expected) : "too many"));
    }
  }
  return entry;
}

// Maps one safetensors file and validates its whole header.
absl::StatusOr<std::pair<std::shared_ptr<MappedFile>, std::vector<ParsedEntry>>> ReadFile(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  if (file->size() < 8) {
    return FileError(path, absl::StrCat("file is ", file->size(),
                                        " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) {
    header_bytes = (header_bytes << 8) | static_cast<unsigned char>(file->data()[i]);
  }
  if (header_bytes > file->size() - 8) {
    return FileError(
        path, absl::StrCat("header length ", header_bytes, " runs past the end of the file (",
                           file->size(), " bytes); the file is truncated or not safetensors"));
  }
  json header;
  try {
    header = json::parse(file->data() + 8, file->data() + 8 + header_bytes);
  } catch (const json::exception& e) {
    return FileError(path, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) return FileError(path, "header JSON is not an object");

  const size_t data_begin = 8 + header_bytes;
  const size_t data_size = file->size() - data_begin;
  std::vector<ParsedEntry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") continue;
    ASSIGN_OR_RETURN(ParsedEntry entry, ParseEntry(path, name, value, data_begin, data_size));
    entries.push_back(std::move(entry));
  }
  return std::make_pair(std::move(file), std::move(entries));
}

// Whether `shard`, a path from an index, names a file inside the checkpoint directory: relative,
// and without a ".." component. Symbolic links are followed as they are (a Hugging Face cache's
// snapshot links into its blobs directory); only the index's own text is confined.
bool InsideModelDirectory(const std::string& shard) {
  const std::filesystem::path path(shard);
  if (shard.empty() || path.is_absolute() || path.has_root_name()) return false;
  return std::none_of(path.begin(), path.end(),
                      [](const std::filesystem::path& part) { return part == ".."; });
}

// Reads model.safetensors.index.json: tensor name → shard file name.
absl::StatusOr<std::map<std::string, std::string>> ReadIndex(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  const json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded()) return FileError(path, "malformed JSON");
  if (!index.is_object()) return FileError(path, "index JSON is not an object");
  const auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object())
    return FileError(path, "no \"weight_map\" object");
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : map_it->items()) {
    if (!shard.is_string()) {
      return FileError(path, absl::StrCat("weight_map entry for tensor ", name,
                                          " is not a file name: ", shard.dump()));
    }
    if (!InsideModelDirectory(shard.get<std::string>())) {
      return FileError(path, absl::StrCat("weight_map entry for tensor ", name, " names ",
                                          shard.dump(), ", a file outside the model directory"));
    }
    weight_map.emplace(name, shard.get<std::string>());
  }
  return weight_map;
}

}  // namespace

absl::StatusOr<Checkpoint> Checkpoint::Open(const std::string& dir) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error)) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory ", dir, " does not exist"));
  }
  Checkpoint checkpoint;
  checkpoint.dir_ = dir;
  const std::string index_path = absl::StrCat(dir, "/", kIndexFileName);
  const std::string single_path = absl::StrCat(dir, "/", kSingleFileName);
  if (std::filesystem::exists(index_path, error)) {
    RETURN_IF_ERROR(checkpoint.AddShards(index_path));
  } else if (std::filesystem::exists(single_path, error)) {
    RETURN_IF_ERROR(checkpoint.AddFile(single_path, /*only=*/nullptr));
  } else {
    return absl::NotFoundError(absl::StrCat("no ", kSingleFileName, " or ", kIndexFileName,
                                            " in checkpoint directory ", dir));
  }
  return checkpoint;
}

absl::Status Checkpoint::AddShards(const std::string& index_path) {
  ASSIGN_OR_RETURN(const auto weight_map, ReadIndex(index_path));
  std::map<std::string, std::vector<std::string>> names_by_shard;
  for (const auto& [name, shard] : weight_map) names_by_shard[shard].push_back(name);
  for (const auto& [shard, names] : names_by_shard) {
    const std::string path = absl::StrCat(dir_, "/", shard);
    std::error_code error;
    if (!std::filesystem::is_regular_file(path, error)) {
      return absl::NotFoundError(absl::StrCat("shard ", path, " named in ", index_path, " (tensor ",
                                              names.front(), ") does not exist"));
    }
    const absl::flat_hash_set<std::string> only(names.begin(), names.end());
    RETURN_IF_ERROR(AddFile(path, &only));
    for (const std::string& name : names) {
      if (!entries_.contains(name)) {
        return absl::DataLossError(absl::StrCat("tensor ", name, " listed in ", index_path,
                                                " is missing from its shard ", path));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Checkpoint::AddFile(const std::string& path,
                                 const absl::flat_hash_set<std::string>* only) {
  ASSIGN_OR_RETURN(auto file_and_entries, ReadFile(path));
  auto& [file, parsed] = file_and_entries;
  for (ParsedEntry& entry : parsed) {
    if (only != nullptr && !only->contains(entry.info.name)) continue;
    const std::string name = entry.info.name;
    entries_[name] = Entry{std::move(entry.info), file, std::move(entry.unsupported_dtype)};
  }
  return absl::OkStatus();
}

bool Checkpoint::Contains(const std::string& name) const { return entries_.contains(name); }

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<const Checkpoint::Entry*> Checkpoint::Find(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor ", name, " not found in checkpoint ", dir_));
  }
  const Entry& entry = it->second;
  if (!entry.unsupported_dtype.empty()) {
    return TensorError(absl::StatusCode::kUnimplemented, name, entry.info.file,
                       absl::StrCat("dtype \"", entry.unsupported_dtype,
                                    "\" is not supported (supported: BF16, F16, F32, I32, I64)"));
  }
  return &entry;
}

absl::StatusOr<TensorInfo> Checkpoint::Info(const std::string& name) const {
  ASSIGN_OR_RETURN(const Entry* entry, Find(name));
  return entry->info;
}

absl::StatusOr<Tensor> Checkpoint::Get(const std::string& name) const {
  ASSIGN_OR_RETURN(const Entry* entry, Find(name));
  // The map is read-only; Tensor has no const view, and callers never write weights.
  void* data = const_cast<char*>(entry->file->data() + entry->info.offset_bytes);
  return Tensor::Borrow(data, entry->info.dtype, entry->info.shape, entry->file);
}

absl::StatusOr<Tensor> Checkpoint::Get(const std::string& name, const Shape& expected) const {
  ASSIGN_OR_RETURN(Tensor tensor, Get(name));
  if (tensor.shape() != expected) {
    ASSIGN_OR_RETURN(const Entry* entry, Find(name));
    return TensorError(absl::StatusCode::kInvalidArgument, name, entry->info.file,
                       absl::StrCat("shape ", ShapeToString(tensor.shape()), ", expected ",
                                    ShapeToString(expected)));
  }
  return tensor;
}

}  // namespace gemmaserve::model
