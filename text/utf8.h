// Small UTF-8 helpers shared by the tokenizer, the streaming detokenizer and the stop-string
// matcher. They work on raw bytes in std::string_view and never allocate. Thread-safe (pure).
#pragma once

#include <cstddef>
#include <string_view>

namespace gemmaserve::text {

// Length in bytes of the UTF-8 sequence that starts with `lead`, or 0 when `lead` cannot start
// one (a continuation byte or 0xF8..0xFF). Says nothing about whether the sequence is complete.
size_t Utf8SequenceLength(unsigned char lead);

// Byte offset of the first byte that is not part of a valid UTF-8 sequence (overlong forms,
// surrogates and code points above U+10FFFF are invalid), or text.size() when all is valid.
size_t FindInvalidUtf8(std::string_view text);

inline bool IsValidUtf8(std::string_view text) { return FindInvalidUtf8(text) == text.size(); }

}  // namespace gemmaserve::text
