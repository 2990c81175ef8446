// Tokenizer speed on the real Gemma 3 tokenizer.json: load time and encode MB/s on a few MB of
// mixed text, mostly ordinary English generated deterministically from a word list, plus the
// reference strings (code, many scripts, emoji, byte fallback). Not a ctest test; run from the
// repository root after scripts/fetch_tokenizer.sh:
//   build/tests/text/tokenizer_bench
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "nlohmann/json.hpp"
#include "tests/text/reference_tokenizer.h"

namespace gemmaserve::text {
namespace {

constexpr size_t kEnglishBytes = 4 << 20;

const char* const kWords[] = {
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "I", "this", "are", "or", "his", "from", "at", "which", "but",
    "have", "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her",
    "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no", "time",
    "people", "government", "language", "model", "system", "server", "request", "tokenizer",
    "between", "important", "development", "information", "understanding", "however",
    "research", "university", "performance", "experiment", "distributed", "results", "water",
    "history", "children", "morning", "question", "answer", "simple", "because", "through",
    "during", "without", "example", "different", "number", "according", "national", "report",
    "1999", "2024", "42", "3.14", "New", "York", "London", "Gemma", "Google", "Monday",
};

// Deterministic English-like prose: sentences of 5-24 words, commas, paragraphs.
std::string EnglishText(size_t num_bytes) {
  std::string text;
  text.reserve(num_bytes + 256);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  const auto next = [&state](uint64_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (state >> 33) % n;
  };
  constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);
  while (text.size() < num_bytes) {
    const uint64_t sentence_words = 5 + next(20);
    for (uint64_t i = 0; i < sentence_words; ++i) {
      std::string word = kWords[next(kNumWords)];
      if (i == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
      text += word;
      if (i + 1 < sentence_words) text += next(8) == 0 ? ", " : " ";
    }
    text += next(5) == 0 ? ".\n\n" : ". ";
  }
  return text;
}

std::string ReferenceStrings() {
  std::ifstream in("tests/data/tokenizer/gemma3_visible.jsonl");
  std::string text;
  for (std::string line; std::getline(in, line);) {
    text += nlohmann::json::parse(line)["text"].get<std::string>();
    text += "\n";
  }
  return text;
}

const Tokenizer& LoadedTokenizer() {
  absl::StatusOr<const Tokenizer*> tokenizer = testing::Gemma3Tokenizer();
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    std::exit(1);
  }
  return **tokenizer;
}

void BM_LoadTokenizerJson(benchmark::State& state) {
  const std::string path = *testing::ReferenceTokenizerPath();
  for (auto _ : state) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::LoadFile(path);
    if (!tokenizer.ok()) state.SkipWithError(std::string(tokenizer.status().message()).c_str());
    benchmark::DoNotOptimize(tokenizer);
  }
}
BENCHMARK(BM_LoadTokenizerJson)->Unit(benchmark::kMillisecond)->Iterations(3);

void EncodeBenchmark(benchmark::State& state, const std::string& text) {
  const Tokenizer& tokenizer = LoadedTokenizer();
  size_t num_tokens = 0;
  for (auto _ : state) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text);
    num_tokens = ids->size();
    benchmark::DoNotOptimize(ids);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / num_tokens;
}

void BM_EncodeEnglish(benchmark::State& state) {
  static const std::string text = EnglishText(kEnglishBytes);
  EncodeBenchmark(state, text);
}
BENCHMARK(BM_EncodeEnglish)->Unit(benchmark::kMillisecond);

// 90% English, 10% the reference strings (code, other scripts, emoji, byte fallback), repeated.
void BM_EncodeMixed(benchmark::State& state) {
  static const std::string text = [] {
    std::string mixed = EnglishText(kEnglishBytes * 9 / 10);
    const std::string reference = ReferenceStrings();
    while (mixed.size() < kEnglishBytes) mixed += reference;
    return mixed;
  }();
  EncodeBenchmark(state, text);
}
BENCHMARK(BM_EncodeMixed)->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const Tokenizer& tokenizer = LoadedTokenizer();
  static const std::vector<int32_t> ids = *tokenizer.Encode(EnglishText(kEnglishBytes));
  for (auto _ : state) benchmark::DoNotOptimize(tokenizer.Decode(ids));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kEnglishBytes));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace gemmaserve::text

BENCHMARK_MAIN();
