// Reads the float32 .npy files of the golden references (tests/data/ref): little-endian '<f4',
// C order, any rank. Test-only helper.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/mapped_file.h"

namespace gemmaserve::testing {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

inline absl::StatusOr<NpyArray> ReadNpyF32(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  const std::string& data = *bytes;
  if (data.size() < 10 || data.compare(0, 6, "\x93NUMPY") != 0) {
    return absl::InvalidArgumentError(path + ": not a .npy file");
  }
  const int major = static_cast<unsigned char>(data[6]);
  const size_t header_len_size = major == 1 ? 2 : 4;
  size_t header_len = 0;
  for (size_t i = 0; i < header_len_size; ++i) {
    header_len |= static_cast<size_t>(static_cast<unsigned char>(data[8 + i])) << (8 * i);
  }
  const size_t header_start = 8 + header_len_size;
  const std::string header = data.substr(header_start, header_len);
  if (header.find("'descr': '<f4'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos) {
    return absl::InvalidArgumentError(path + ": expected little-endian f32 in C order: " + header);
  }
  const size_t open = header.find("'shape': (");
  const size_t close = header.find(')', open);
  NpyArray array;
  int64_t count = 1;
  for (absl::string_view dim : absl::StrSplit(header.substr(open + 10, close - open - 10), ',',
                                              absl::SkipWhitespace())) {
    int64_t value;
    if (!absl::SimpleAtoi(dim, &value)) return absl::InvalidArgumentError(path + ": bad shape");
    array.shape.push_back(value);
    count *= value;
  }
  const size_t offset = header_start + header_len;
  if (data.size() - offset != static_cast<size_t>(count) * sizeof(float)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": data size does not match the shape"));
  }
  array.values.resize(count);
  std::memcpy(array.values.data(), data.data() + offset, count * sizeof(float));
  return array;
}

}  // namespace gemmaserve::testing
