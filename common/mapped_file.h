// A read-only memory map of a whole file. Tensors borrowed from it hold a shared_ptr to the
// MappedFile, so the mapping lives as long as any tensor that points into it.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace gemmaserve {

class MappedFile {
 public:
  // NOT_FOUND / PERMISSION_DENIED / INTERNAL with the path in the message.
  static absl::StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile(std::string path, const char* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const char* data_;
  size_t size_;
};

// Reads a whole (small) file into a string, e.g. config.json.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace gemmaserve
