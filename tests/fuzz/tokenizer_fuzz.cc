// tokenizer.json: Tokenizer::LoadFromJson on the input's JSON, then encoding (with and without
// special tokens recognised) and decoding the input's text with it when it loads, and always with
// the tiny checkpoint's real tokenizer. Input: text (FuzzedDataProvider's random-length string,
// ended by a backslash and one more byte), then the JSON.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "text/tokenizer.h"

namespace {

void EncodeAndDecode(const gemmaserve::text::Tokenizer& tokenizer, const std::string& text) {
  for (bool split_special : {false, true}) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(
        text, {.add_special_tokens = !split_special, .split_special_tokens = split_special});
    if (!ids.ok()) continue;
    (void)tokenizer.Decode(*ids);
    (void)tokenizer.Decode(*ids, /*skip_special_tokens=*/true);
    for (int32_t id : *ids) (void)tokenizer.IdToToken(id);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  const std::string text = input.ConsumeRandomLengthString(4096);
  const std::string json = input.ConsumeRemainingBytesAsString();
  EncodeAndDecode(gemmaserve::fuzz::TinyModel().tokenizer(), text);
  absl::StatusOr<std::unique_ptr<gemmaserve::text::Tokenizer>> tokenizer =
      gemmaserve::text::Tokenizer::LoadFromJson(json);
  if (tokenizer.ok()) EncodeAndDecode(**tokenizer, text);
  return 0;
}
