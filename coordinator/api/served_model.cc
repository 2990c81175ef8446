#include "coordinator/api/served_model.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "model/config.h"

namespace gemmaserve::coordinator::api {

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Load(const std::string& model_dir,
                                                               std::string name) {
  if (name.empty()) {
    name = std::filesystem::path(model_dir).lexically_normal().filename().string();
    if (name.empty()) name = std::filesystem::path(model_dir).parent_path().filename().string();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<text::Tokenizer> tokenizer,
                   text::Tokenizer::LoadFromModelDir(model_dir));
  ASSIGN_OR_RETURN(const model::Gemma4Config config, model::Gemma4Config::FromModelDir(model_dir));
  ASSIGN_OR_RETURN(model::GenerationDefaults defaults,
                   model::GenerationDefaults::FromModelDir(model_dir));
  std::vector<int32_t> eos(config.eos_token_ids.begin(), config.eos_token_ids.end());
  return Create(std::move(name), std::move(tokenizer),
                text::ChatVariantForModel(config.hidden_size_per_layer_input), defaults,
                std::move(eos));
}

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Create(
    std::string name, std::unique_ptr<text::Tokenizer> tokenizer, text::ChatVariant variant,
    model::GenerationDefaults defaults, std::vector<int32_t> eos_token_ids) {
  ASSIGN_OR_RETURN(text::ChatTemplate chat_template,
                   text::ChatTemplate::Create(tokenizer.get(), variant));
  const int32_t turn_end = chat_template.tokens().turn_end;
  return std::unique_ptr<ServedModel>(new ServedModel(std::move(name), std::move(tokenizer),
                                                      std::move(chat_template), defaults,
                                                      std::move(eos_token_ids), turn_end));
}

ServedModel::ServedModel(std::string name, std::unique_ptr<text::Tokenizer> tokenizer,
                         text::ChatTemplate chat_template, model::GenerationDefaults defaults,
                         std::vector<int32_t> eos_token_ids, int32_t turn_end_id)
    : name_(std::move(name)),
      tokenizer_(std::move(tokenizer)),
      chat_template_(std::move(chat_template)),
      defaults_(defaults),
      eos_token_ids_(std::move(eos_token_ids)),
      turn_end_id_(turn_end_id),
      created_s_(absl::ToUnixSeconds(absl::Now())) {}

}  // namespace gemmaserve::coordinator::api
