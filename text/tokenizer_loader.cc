// Reading tokenizer.json into a Tokenizer: every supported component is parsed here, and
// everything else is rejected by name (see tokenizer.h).
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"
#include "text/tokenizer.h"

namespace gemmaserve::text {
namespace {

using Json = nlohmann::json;

// Gemma's 262,144-token tokenizer.json is 33 MB and nests 4 levels deep (model.merges[i]).
constexpr JsonLimits kTokenizerJsonLimits{.max_bytes = size_t{1} << 30};

absl::Status Unsupported(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(what, " is not supported"));
}

// The field, or a null value when `object` is not an object or lacks it.
const Json* FieldOrNull(const Json& object, const char* key) {
  static const Json* const kNull = new Json();
  if (!object.is_object()) return kNull;
  const auto it = object.find(key);
  return it == object.end() ? kNull : &*it;
}

// The field, or nullptr when `object` is not an object or lacks it.
const Json* Field(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

absl::StatusOr<std::string> StringField(const Json& object, const char* key,
                                        const std::string& where) {
  const Json* field = Field(object, key);
  if (field == nullptr || !field->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" must be a string"));
  }
  return field->get<std::string>();
}

bool FlagField(const Json& object, const char* key) {
  const Json* field = Field(object, key);
  return field != nullptr && field->is_boolean() && field->get<bool>();
}

// "Sequence" components list their parts under a type-specific key; anything else is one part.
absl::StatusOr<std::string> TypeOf(const Json& component, const std::string& kind) {
  ASSIGN_OR_RETURN(std::string type, StringField(component, "type", kind));
  return type;
}

absl::Status UnsupportedType(const std::string& kind, const std::string& type) {
  return Unsupported(absl::StrCat(kind, " type \"", type, "\""));
}

// A {"String": "..."} pattern; Regex patterns are rejected.
absl::StatusOr<std::string> StringPattern(const Json& component, const std::string& where) {
  const Json* pattern = Field(component, "pattern");
  if (pattern != nullptr && Field(*pattern, "Regex") != nullptr) {
    return Unsupported(absl::StrCat(where, " with a Regex pattern"));
  }
  if (pattern == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"pattern\" is missing"));
  }
  ASSIGN_OR_RETURN(std::string text, StringField(*pattern, "String", where + " pattern"));
  if (text.empty()) return Unsupported(absl::StrCat(where, " with an empty pattern"));
  return text;
}

// Calls `visit` on each part of a component that may be a "Sequence" of parts under `parts_key`.
template <typename Visit>
absl::Status ForEachPart(const Json& component, const std::string& kind, const char* parts_key,
                         const Visit& visit) {
  if (component.is_null()) return absl::OkStatus();
  ASSIGN_OR_RETURN(const std::string type, TypeOf(component, kind));
  if (type != "Sequence") return visit(component, type);
  const Json* parts = Field(component, parts_key);
  if (parts == nullptr || !parts->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(kind, " Sequence: \"", parts_key,
                                                   "\" must be an array"));
  }
  for (const Json& part : *parts) RETURN_IF_ERROR(ForEachPart(part, kind, parts_key, visit));
  return absl::OkStatus();
}

}  // namespace

class Tokenizer::Loader {
 public:
  // Errors are prefixed with `name` (the file), e.g. "tokenizer.json: normalizer type ...".
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Parse(std::string_view json_text,
                                                          const std::string& name) {
    BpeEntries entries;
    absl::StatusOr<Json> parsed =
        ParseJson(json_text, kTokenizerJsonLimits, StreamBpeEntries(&entries));
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", parsed.status().message()));
    }
    const Json root = *std::move(parsed);
    // The streamed vocab and merges left empty containers behind; their types still tell.
    if (const Json* model = Field(root, "model")) {
      const Json* vocab = Field(*model, "vocab");
      const Json* merges = Field(*model, "merges");
      entries.has_vocab = vocab != nullptr && vocab->is_object();
      entries.has_merges = merges != nullptr && merges->is_array();
    }
    return Named(Load(root, entries), name);
  }

  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadNamed(const Json& root,
                                                              const std::string& name) {
    // Load's walk over nested Sequence components recurses; Parse has bounded the depth already.
    if (JsonDepth(root) > kTokenizerJsonLimits.max_depth) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": JSON nested deeper than ", kTokenizerJsonLimits.max_depth, " levels"));
    }
    return Named(Load(root, BpeEntries::FromModelJson(*FieldOrNull(root, "model"))), name);
  }

 private:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Named(
      absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer, const std::string& name) {
    if (tokenizer.ok()) return tokenizer;
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(name, ": ", tokenizer.status().message()));
  }

  // A parser callback that moves model.vocab and model.merges entries into `entries` instead of
  // the document: a DOM of 262k vocab entries and 514k merges would take most of the load time.
  // Depths count enclosing containers: 1 = root keys, 2 = model keys, 3 = vocab / merges items.
  static Json::parser_callback_t StreamBpeEntries(BpeEntries* entries) {
    struct Path {
      std::string top_key, model_key, vocab_key;
    };
    auto path = std::make_shared<Path>();
    return [entries, path](int depth, Json::parse_event_t event, Json& parsed) {
      using Event = Json::parse_event_t;
      if (event == Event::key) {
        if (depth == 1) path->top_key = parsed.get<std::string>();
        if (depth == 2 && path->top_key == "model") path->model_key = parsed.get<std::string>();
      }
      if (path->top_key != "model" || depth < 3) return true;
      if (depth != 3 || event == Event::object_start || event == Event::array_start) return true;
      // A complete vocab entry or merge: a scalar, or a container that has just closed.
      if (path->model_key == "vocab") {
        if (event == Event::key) {
          path->vocab_key = parsed.get<std::string>();
        } else {
          entries->AddVocab(path->vocab_key, parsed);
        }
        return false;
      }
      if (path->model_key == "merges" && event != Event::key) {
        entries->AddMerge(parsed);
        return false;
      }
      return true;
    };
  }

  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const Json& root,
                                                         const BpeEntries& entries) {
    if (!root.is_object()) return absl::InvalidArgumentError("the top level is not an object");
    for (const char* key : {"truncation", "padding"}) {
      const Json* field = Field(root, key);
      if (field != nullptr && !field->is_null()) return Unsupported(absl::StrCat("\"", key, "\""));
    }
    const Json* model = Field(root, "model");
    if (model == nullptr) return absl::InvalidArgumentError("\"model\" is missing");
    std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
    ASSIGN_OR_RETURN(tokenizer->model_, BpeModel::Create(*model, entries));
    const Json null_json;
    const auto component = [&](const char* key) -> const Json& {
      const Json* field = Field(root, key);
      return field == nullptr ? null_json : *field;
    };
    RETURN_IF_ERROR(LoadAddedTokens(component("added_tokens"), tokenizer.get()));
    RETURN_IF_ERROR(LoadNormalizer(component("normalizer"), tokenizer.get()));
    RETURN_IF_ERROR(LoadPreTokenizer(component("pre_tokenizer"), tokenizer.get()));
    RETURN_IF_ERROR(LoadDecoder(component("decoder"), tokenizer.get()));
    RETURN_IF_ERROR(LoadPostProcessor(component("post_processor"), tokenizer.get()));
    ComputeByteValues(tokenizer.get());
    return tokenizer;
  }

  static absl::Status LoadAddedTokens(const Json& added_tokens, Tokenizer* tokenizer) {
    if (!added_tokens.is_null() && !added_tokens.is_array()) {
      return absl::InvalidArgumentError("\"added_tokens\" is not an array");
    }
    for (const Json& entry : added_tokens) {
      AddedToken token;
      ASSIGN_OR_RETURN(token.content, StringField(entry, "content", "added token"));
      const std::string where = absl::StrCat("added token \"", token.content, "\"");
      const Json* id = Field(entry, "id");
      if (id == nullptr || !id->is_number_integer() || id->get<int64_t>() < 0 ||
          id->get<int64_t>() >= (int64_t{1} << 30)) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": \"id\" is not a valid id"));
      }
      token.id = id->get<int32_t>();
      token.special = FlagField(entry, "special");
      for (const char* flag : {"normalized", "lstrip", "rstrip", "single_word"}) {
        if (FlagField(entry, flag)) return Unsupported(absl::StrCat(where, " with ", flag, " true"));
      }
      auto& index_of_id = tokenizer->added_token_of_id_;
      if (static_cast<size_t>(token.id) >= index_of_id.size()) index_of_id.resize(token.id + 1, -1);
      if (index_of_id[token.id] >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": id ", token.id, " is taken"));
      }
      index_of_id[token.id] = static_cast<int32_t>(tokenizer->added_.tokens().size());
      RETURN_IF_ERROR(tokenizer->added_.Add(std::move(token)));
    }
    auto& index_of_id = tokenizer->added_token_of_id_;
    if (index_of_id.size() < static_cast<size_t>(tokenizer->model_->id_limit())) {
      index_of_id.resize(tokenizer->model_->id_limit(), -1);
    }
    return absl::OkStatus();
  }

  static absl::Status LoadNormalizer(const Json& normalizer, Tokenizer* tokenizer) {
    return ForEachPart(normalizer, "normalizer", "normalizers",
                       [&](const Json& part, const std::string& type) -> absl::Status {
                         if (type != "Replace") return UnsupportedType("normalizer", type);
                         ASSIGN_OR_RETURN(std::string pattern,
                                          StringPattern(part, "normalizer Replace"));
                         ASSIGN_OR_RETURN(std::string content,
                                          StringField(part, "content", "normalizer Replace"));
                         tokenizer->normalizer_.push_back({std::move(pattern), std::move(content)});
                         return absl::OkStatus();
                       });
  }

  static absl::Status LoadPreTokenizer(const Json& pre_tokenizer, Tokenizer* tokenizer) {
    return ForEachPart(
        pre_tokenizer, "pre_tokenizer", "pretokenizers",
        [&](const Json& part, const std::string& type) -> absl::Status {
          if (type != "Split") return UnsupportedType("pre_tokenizer", type);
          ASSIGN_OR_RETURN(std::string pattern, StringPattern(part, "pre_tokenizer Split"));
          ASSIGN_OR_RETURN(const std::string behavior,
                           StringField(part, "behavior", "pre_tokenizer Split"));
          if (behavior != "MergedWithPrevious") {
            return Unsupported(absl::StrCat("pre_tokenizer Split behavior \"", behavior, "\""));
          }
          if (FlagField(part, "invert")) return Unsupported("pre_tokenizer Split with invert true");
          tokenizer->split_patterns_.push_back(std::move(pattern));
          return absl::OkStatus();
        });
  }

  static absl::Status LoadDecoder(const Json& decoder, Tokenizer* tokenizer) {
    if (decoder.is_null()) return Unsupported("a null decoder");
    RETURN_IF_ERROR(ForEachPart(
        decoder, "decoder", "decoders", [&](const Json& part, const std::string& type) -> absl::Status {
          auto& steps = tokenizer->decoder_;
          if (!steps.empty() && steps.back().kind == DecodeStep::Kind::kFuse) {
            // Later steps would see the joined text, which streaming decode cannot reproduce.
            return Unsupported(absl::StrCat("decoder \"", type, "\" after Fuse"));
          }
          if (type == "ByteFallback") {
            steps.push_back({DecodeStep::Kind::kByteFallback, {}});
          } else if (type == "Fuse") {
            steps.push_back({DecodeStep::Kind::kFuse, {}});
          } else if (type == "Replace") {
            ASSIGN_OR_RETURN(std::string pattern, StringPattern(part, "decoder Replace"));
            ASSIGN_OR_RETURN(std::string content, StringField(part, "content", "decoder Replace"));
            steps.push_back({DecodeStep::Kind::kReplace, {std::move(pattern), std::move(content)}});
          } else {
            return UnsupportedType("decoder", type);
          }
          return absl::OkStatus();
        }));
    return absl::OkStatus();
  }

  static absl::Status LoadPostProcessor(const Json& post_processor, Tokenizer* tokenizer) {
    if (post_processor.is_null()) return absl::OkStatus();
    ASSIGN_OR_RETURN(const std::string type, TypeOf(post_processor, "post_processor"));
    if (type != "TemplateProcessing") return UnsupportedType("post_processor", type);
    const Json* single = Field(post_processor, "single");
    if (single == nullptr || !single->is_array()) {
      return absl::InvalidArgumentError("post_processor TemplateProcessing: \"single\" is missing");
    }
    bool seen_sequence = false;
    for (const Json& item : *single) {
      if (const Json* sequence = Field(item, "Sequence")) {
        const Json* id = Field(*sequence, "id");
        if (seen_sequence || id == nullptr || *id != "A") {
          return Unsupported("post_processor TemplateProcessing \"single\" other than one sequence A");
        }
        seen_sequence = true;
        continue;
      }
      const Json* special = Field(item, "SpecialToken");
      if (special == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("post_processor TemplateProcessing: bad item ", item.dump()));
      }
      ASSIGN_OR_RETURN(const std::string name,
                       StringField(*special, "id", "post_processor SpecialToken"));
      const Json* tokens = Field(post_processor, "special_tokens");
      const Json* entry = tokens == nullptr ? nullptr : Field(*tokens, name.c_str());
      const Json* ids = entry == nullptr ? nullptr : Field(*entry, "ids");
      if (ids == nullptr || !ids->is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "post_processor TemplateProcessing: special_tokens[\"", name, "\"].ids is missing"));
      }
      for (const Json& id : *ids) {
        if (!id.is_number_integer() || !tokenizer->IsValidId(id.get<int32_t>())) {
          return absl::InvalidArgumentError(absl::StrCat(
              "post_processor TemplateProcessing: ", name, " has an unknown id ", id.dump()));
        }
        (seen_sequence ? tokenizer->suffix_ids_ : tokenizer->prefix_ids_).push_back(id.get<int32_t>());
      }
    }
    if (!seen_sequence) {
      return absl::InvalidArgumentError("post_processor TemplateProcessing: no sequence A in \"single\"");
    }
    return absl::OkStatus();
  }

  // The byte a token stands for when the decoder's ByteFallback sees it, after the Replace steps
  // that come before it, as HF checks it: exactly "<0xHH>".
  static void ComputeByteValues(Tokenizer* tokenizer) {
    tokenizer->byte_value_.assign(tokenizer->id_limit(), -1);
    std::vector<const DecodeStep*> replaces_before;
    bool has_byte_fallback = false;
    for (const DecodeStep& step : tokenizer->decoder_) {
      if (step.kind == DecodeStep::Kind::kByteFallback) {
        has_byte_fallback = true;
        break;
      }
      if (step.kind == DecodeStep::Kind::kReplace) replaces_before.push_back(&step);
    }
    if (!has_byte_fallback) return;
    for (int32_t id = 0; id < tokenizer->id_limit(); ++id) {
      const std::optional<std::string_view> token = tokenizer->IdToToken(id);
      if (!token) continue;
      std::vector<std::string> piece{std::string(*token)};
      for (const DecodeStep* step : replaces_before) tokenizer->RunDecoderStep(*step, &piece);
      if (std::optional<uint8_t> byte = ParseByteToken(piece[0])) tokenizer->byte_value_[id] = *byte;
    }
  }
};

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromJson(std::string_view json_text) {
  return Loader::Parse(json_text, "tokenizer.json");
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromJsonValue(const Json& root) {
  return Loader::LoadNamed(root, "tokenizer.json");
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  return Loader::Parse(text, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadFromModelDir(const std::string& dir) {
  return LoadFile(absl::StrCat(dir, "/tokenizer.json"));
}

}  // namespace gemmaserve::text
