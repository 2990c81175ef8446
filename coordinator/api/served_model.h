// ServedModel: what the client APIs need to know about the model they serve, apart from the
// engine: its public name, the tokenizer and chat template that turn requests into prompt ids,
// the sampling defaults that unset request fields take, and the ids that end a sequence.
//
// The coordinator loads one at start-up and hands it by const reference to the HTTP and gRPC
// servers, which must not outlive it. Immutable after construction; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/generation_config.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace gemmaserve::coordinator::api {

class ServedModel {
 public:
  // Reads DIR/tokenizer.json, config.json (for the chat variant and EOS ids) and
  // generation_config.json. `name` is the model name clients send; empty = the directory's name.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Load(const std::string& model_dir,
                                                           std::string name);
  // FAILED_PRECONDITION when the tokenizer lacks the Gemma 4 chat tokens.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Create(
      std::string name, std::unique_ptr<text::Tokenizer> tokenizer, text::ChatVariant variant,
      model::GenerationDefaults defaults, std::vector<int32_t> eos_token_ids);

  const std::string& name() const { return name_; }
  const text::Tokenizer& tokenizer() const { return *tokenizer_; }
  const text::ChatTemplate& chat_template() const { return chat_template_; }
  const model::GenerationDefaults& defaults() const { return defaults_; }
  const std::vector<int32_t>& eos_token_ids() const { return eos_token_ids_; }
  // <turn|>: ends a model turn, so chat requests stop on it.
  int32_t turn_end_id() const { return turn_end_id_; }
  // Unix seconds at load, OpenAI's "created" of the model.
  int64_t created_s() const { return created_s_; }

 private:
  ServedModel(std::string name, std::unique_ptr<text::Tokenizer> tokenizer,
              text::ChatTemplate chat_template, model::GenerationDefaults defaults,
              std::vector<int32_t> eos_token_ids, int32_t turn_end_id);

  std::string name_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  text::ChatTemplate chat_template_;
  model::GenerationDefaults defaults_;
  std::vector<int32_t> eos_token_ids_;
  int32_t turn_end_id_;
  int64_t created_s_;
};

}  // namespace gemmaserve::coordinator::api
