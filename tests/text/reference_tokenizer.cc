#include "tests/text/reference_tokenizer.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"

namespace gemmaserve::testing {
namespace {

using Json = nlohmann::json;

const std::pair<int, const char*> kGemma4ChatTokens[] = {
    {46, "<|tool>"},          {47, "<tool|>"},          {48, "<|tool_call>"},
    {49, "<tool_call|>"},     {50, "<|tool_response>"}, {51, "<tool_response|>"},
    {52, "<|\"|>"},           {98, "<|think|>"},        {100, "<|channel>"},
    {101, "<channel|>"},      {105, "<|turn>"},         {106, "<turn|>"},
};

absl::StatusOr<Json> ReadReferenceJson() {
  ASSIGN_OR_RETURN(const std::string path, ReferenceTokenizerPath());
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
}

// Renames the chat tokens in both added_tokens and model.vocab and marks them special.
absl::Status RenameChatTokens(Json* root) {
  Json& vocab = (*root)["model"]["vocab"];
  for (const auto& [id, name] : kGemma4ChatTokens) {
    bool renamed = false;
    for (Json& added : (*root)["added_tokens"]) {
      if (added["id"] != id) continue;
      vocab.erase(added["content"].get<std::string>());
      added["content"] = name;
      added["special"] = true;
      renamed = true;
    }
    if (!renamed) return absl::NotFoundError(absl::StrCat("no added token with id ", id));
    vocab[name] = id;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<text::Tokenizer>> LoadGemma4Style() {
  ASSIGN_OR_RETURN(Json root, ReadReferenceJson());
  RETURN_IF_ERROR(RenameChatTokens(&root));
  return text::Tokenizer::LoadFromJsonValue(root);
}

template <typename Load>
absl::StatusOr<const text::Tokenizer*> LoadOnce(const Load& load) {
  static const auto* const loaded = new absl::StatusOr<std::unique_ptr<text::Tokenizer>>(load());
  if (!loaded->ok()) return loaded->status();
  return loaded->value().get();
}

}  // namespace

absl::StatusOr<std::string> ReferenceTokenizerPath() {
  if (const char* path = std::getenv("GEMMASERVE_TOKENIZER_JSON"); path != nullptr && *path) {
    return std::string(path);
  }
  std::string cache;
  if (const char* dir = std::getenv("GEMMASERVE_CACHE"); dir != nullptr && *dir) {
    cache = dir;
  } else if (const char* home = std::getenv("HOME"); home != nullptr) {
    cache = absl::StrCat(home, "/.cache/gemmaserve");
  }
  const std::string path = absl::StrCat(cache, "/tokenizer-gemma3/tokenizer.json");
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat(
        "reference tokenizer.json not found at ", path,
        " (and GEMMASERVE_TOKENIZER_JSON is not set); run scripts/fetch_tokenizer.sh"));
  }
  return path;
}

absl::StatusOr<const text::Tokenizer*> Gemma3Tokenizer() {
  return LoadOnce([]() -> absl::StatusOr<std::unique_ptr<text::Tokenizer>> {
    ASSIGN_OR_RETURN(const std::string path, ReferenceTokenizerPath());
    return text::Tokenizer::LoadFile(path);
  });
}

absl::StatusOr<const text::Tokenizer*> Gemma4StyleTokenizer() {
  return LoadOnce([] { return LoadGemma4Style(); });
}

}  // namespace gemmaserve::testing
