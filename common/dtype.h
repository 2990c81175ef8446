// Element types of tensors and the scalar conversions between them.
//
// bf16 and f16 are stored as raw uint16_t bit patterns; the conversions round to nearest even,
// as PyTorch and the CUDA intrinsics do, so values written here read back identically there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace gemmaserve {

enum class DType { kF32, kBF16, kF16, kI32, kI64 };

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);  // "f32", "bf16", ...
// Parses the names DTypeName returns.
absl::StatusOr<DType> ParseDType(std::string_view name);

inline float Bf16ToF32(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof(value));
  return value;
}

inline uint16_t F32ToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN, sign kept
  }
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// Rounds a float to the nearest bf16 value and returns it as a float.
inline float RoundToBf16(float value) { return Bf16ToF32(F32ToBf16(value)); }

float F16ToF32(uint16_t bits);
uint16_t F32ToF16(float value);

// Widens `count` elements of `dtype` (f32, bf16 or f16) at `src` into floats at `dst`.
void ConvertToF32(DType dtype, const void* src, float* dst, size_t count);

}  // namespace gemmaserve
