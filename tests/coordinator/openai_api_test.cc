// The API layer without a server: OpenAI request parsing and validation (every bad input gets
// INVALID_ARGUMENT naming its field), conversion to the engine's Request, the chat output
// splitter, and the JSON / SSE formatting of responses.
#include <memory>
#include <string>

#include "coordinator/api/api_error.h"
#include "coordinator/api/chat_output.h"
#include "coordinator/api/generate_params.h"
#include "coordinator/api/json_fields.h"
#include "coordinator/api/openai_request.h"
#include "coordinator/api/openai_response.h"
#include "coordinator/api/proto_convert.h"
#include "coordinator/api/served_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gemmaserve::coordinator::api {
namespace {

using Json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int64_t kMaxModelLen = 256;

class OpenAiApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = ServedModel::Load("tests/data/gemma4-tiny-dense", "tiny").value().release();
  }
  static void TearDownTestSuite() { delete model_; }

  static absl::StatusOr<Request> Build(OpenAiEndpoint endpoint, const std::string& body) {
    absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, body, "tiny");
    if (!parsed.ok()) return parsed.status();
    return BuildRequest(parsed->params, *model_, kMaxModelLen);
  }
  static absl::Status Completion(const std::string& body) {
    return Build(OpenAiEndpoint::kCompletions, body).status();
  }
  static absl::Status Chat(const std::string& body) {
    return Build(OpenAiEndpoint::kChatCompletions, body).status();
  }
  // Expects a 400 whose param is `field` and whose message starts with it.
  static void ExpectBadField(const absl::Status& status, const std::string& field) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_EQ(ParamOf(status), field) << status;
    EXPECT_EQ(HttpStatusOf(status), 400);
    EXPECT_THAT(std::string(status.message()), HasSubstr(field));
  }

  static ServedModel* model_;
};

ServedModel* OpenAiApiTest::model_ = nullptr;

TEST_F(OpenAiApiTest, CompletionBecomesARequestWithDefaultsResolved) {
  absl::StatusOr<Request> request =
      Build(OpenAiEndpoint::kCompletions, R"({"model": "tiny", "prompt": "Hello", "seed": 7,
          "stop": "x", "top_k": 5, "logprobs": 2})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->prompt_ids.front(), 2);  // <bos>
  EXPECT_EQ(request->max_tokens, 16);         // the OpenAI completions default
  EXPECT_THAT(request->stop_strings, ElementsAre("x"));
  EXPECT_TRUE(request->stop_token_ids.empty());
  EXPECT_EQ(request->sampling.temperature(), 0.0f);  // generation_config: do_sample false
  EXPECT_EQ(request->sampling.top_k(), 5);
  EXPECT_EQ(request->sampling.top_p(), 1.0f);
  EXPECT_EQ(request->sampling.repetition_penalty(), 1.0f);
  EXPECT_TRUE(request->sampling.has_seed());
  EXPECT_EQ(request->sampling.seed(), 7u);
  EXPECT_TRUE(request->sampling.logprobs());
  EXPECT_EQ(request->sampling.top_logprobs(), 2);
}

TEST_F(OpenAiApiTest, EchoWithLogprobsAsksForPromptLogprobs) {
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(
      OpenAiEndpoint::kCompletions, R"({"prompt": "Hello", "echo": true, "logprobs": 1})", "tiny");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->echo);
  EXPECT_TRUE(parsed->params.prompt_logprobs);
  parsed = ParseOpenAiRequest(OpenAiEndpoint::kCompletions, R"({"prompt": "Hello", "echo": true})",
                              "tiny");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->echo);
  EXPECT_FALSE(parsed->params.prompt_logprobs);  // the text alone needs no logprobs
  ExpectBadField(Completion(R"({"prompt": "x", "echo": "yes"})"), "echo");
}

TEST_F(OpenAiApiTest, TokenPromptsAndStopListsAreAccepted) {
  absl::StatusOr<Request> request = Build(
      OpenAiEndpoint::kCompletions,
      R"({"prompt": [[2, 40, 41]], "max_tokens": 5, "stop": ["a", "b"], "stop_token_ids": [7],
          "ignore_eos": true, "temperature": 0.5, "min_p": 0.1, "n": 1})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(request->prompt_ids, ElementsAre(2, 40, 41));
  EXPECT_EQ(request->max_tokens, 5);
  EXPECT_THAT(request->stop_strings, ElementsAre("a", "b"));
  EXPECT_THAT(request->stop_token_ids, ElementsAre(7));
  EXPECT_TRUE(request->ignore_eos);
  EXPECT_FLOAT_EQ(request->sampling.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(request->sampling.min_p(), 0.1f);
}

TEST_F(OpenAiApiTest, ChatRendersTheTemplateAndStopsAtEndOfTurn) {
  absl::StatusOr<Request> request =
      Build(OpenAiEndpoint::kChatCompletions,
            R"({"messages": [{"role": "user", "content": "Hi <turn|>"}],
                "max_completion_tokens": 4})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->max_tokens, 4);
  EXPECT_THAT(request->stop_token_ids, ElementsAre(model_->turn_end_id()));
  const std::string prompt = *model_->tokenizer().Decode(request->prompt_ids);
  EXPECT_EQ(prompt, "<bos><|turn>user\nHi <turn|><turn|>\n<|turn>model\n"
                    "<|channel>thought\n<channel|>");
  // The user's "<turn|>" stays text: only the template's own end-of-turn is the special id.
  EXPECT_EQ(std::count(request->prompt_ids.begin(), request->prompt_ids.end(),
                       model_->turn_end_id()),
            1);
}

TEST_F(OpenAiApiTest, ChatWithoutMaxTokensFillsTheContext) {
  absl::StatusOr<Request> request = Build(OpenAiEndpoint::kChatCompletions,
                                          R"({"messages": [{"role": "user", "content": "Hi"}]})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->max_tokens, kMaxModelLen - static_cast<int64_t>(request->prompt_ids.size()));
}

TEST_F(OpenAiApiTest, ChatToolsThinkingAndToolResultsRender) {
  absl::StatusOr<Request> request = Build(OpenAiEndpoint::kChatCompletions, R"({
      "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 21}"}],
      "tools": [{"type": "function", "function": {"name": "get_weather",
                 "parameters": {"type": "object", "properties": {}}}}],
      "chat_template_kwargs": {"enable_thinking": true}, "max_tokens": 3})");
  ASSERT_TRUE(request.ok()) << request.status();
  const std::string prompt = *model_->tokenizer().Decode(request->prompt_ids);
  EXPECT_THAT(prompt, HasSubstr("<|turn>system\n<|think|>Be brief.<|tool>declaration:get_weather"));
  EXPECT_THAT(prompt, HasSubstr("<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|>"));
  EXPECT_THAT(prompt, HasSubstr("<|tool_response>response:get_weather{temp:21}<tool_response|>"));
}

TEST_F(OpenAiApiTest, MalformedJsonIsRefused) {
  absl::Status status = Completion(R"({"prompt": "x", )");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("malformed JSON at byte"));
  ExpectBadField(Completion(R"({"prompt": tru})"), "prompt");
  ExpectBadField(Completion(R"([1, 2])"), "body");
}

// "[[...]]", `depth` levels deep.
std::string NestedArrays(int depth) {
  const size_t n = static_cast<size_t>(depth);
  return std::string(n, '[') + std::string(n, ']');
}

// A chat body whose second message is `second`.
std::string ChatWith(const Json& second) {
  return Json{{"messages", {{{"role", "user"}, {"content", "Hi"}}, second}}}.dump();
}

Json AssistantCalling(const std::string& arguments) {
  const Json function = {{"name", "f"}, {"arguments", arguments}};
  return {{"role", "assistant"}, {"tool_calls", {{{"id", "c1"}, {"function", function}}}}};
}

TEST_F(OpenAiApiTest, JsonNestedDeeperThanTheLimitNamesTheField) {
  // In the body: the param is the path where the body went too deep.
  const absl::Status body = Chat(
      R"({"messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function",
          "function": {"name": "f", "parameters": )" + NestedArrays(200000) + "}}]}");
  EXPECT_EQ(body.code(), absl::StatusCode::kInvalidArgument) << body;
  EXPECT_THAT(ParamOf(body), StartsWith("tools[0].function.parameters[0][0]"));
  EXPECT_THAT(std::string(body.message()), HasSubstr(": JSON nested deeper than 64 levels"));
  EXPECT_EQ(Chat(R"({"messages": )" + NestedArrays(65) + "}").message().substr(0, 9),
            "messages[");
  // JSON text inside strings: tool-call arguments and a tool message's content.
  const std::string deep_object = R"({"a": )" + NestedArrays(200000) + "}";
  ExpectBadField(Chat(ChatWith(AssistantCalling(deep_object))),
                 "messages[1].tool_calls[0].function.arguments");
  ExpectBadField(Chat(ChatWith({{"role", "tool"}, {"name", "f"}, {"content", deep_object}})),
                 "messages[1].content");
  // Exactly at the limit is accepted.
  EXPECT_TRUE(Chat(ChatWith(AssistantCalling(R"({"a": )" + NestedArrays(63) + "}"))).ok());
  EXPECT_TRUE(
      Chat(ChatWith({{"role", "tool"}, {"name", "f"}, {"content", NestedArrays(64)}})).ok());
}

TEST_F(OpenAiApiTest, EmbeddedJsonLongerThanTheLimitIsRefusedAndOtherTextStaysText) {
  const std::string long_json =
      R"({"a": ")" + std::string(kEmbeddedJsonLimits.max_bytes, 'x') + R"("})";
  const absl::Status arguments = Chat(ChatWith(AssistantCalling(long_json)));
  ExpectBadField(arguments, "messages[1].tool_calls[0].function.arguments");
  EXPECT_THAT(std::string(arguments.message()), HasSubstr("longer than the limit"));
  ExpectBadField(Chat(ChatWith({{"role", "tool"}, {"name", "f"}, {"content", long_json}})),
                 "messages[1].content");
  // A tool result that is not JSON, even if it looks like it, is a string.
  absl::StatusOr<Request> request = Build(
      OpenAiEndpoint::kChatCompletions,
      ChatWith({{"role", "tool"}, {"name", "f"}, {"content", "[[[" + NestedArrays(100)}}));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(*model_->tokenizer().Decode(request->prompt_ids),
              HasSubstr("response:f{value:<|\"|>[[[[[["));
}

TEST_F(OpenAiApiTest, GrpcToolsJsonAndArgumentsNestedTooDeepNameTheField) {
  v1::GenerateRequest request;
  v1::ChatMessage* user = request.mutable_chat()->add_messages();
  user->set_role("user");
  user->set_content("Hi");
  request.set_tools_json(R"([{"type": "function", "function": {"name": "f", "parameters": )" +
                         NestedArrays(200000) + "}}]");
  ExpectBadField(ParamsFromProto(request).status(), "tools_json");
  request.clear_tools_json();
  v1::ChatMessage* assistant = request.mutable_chat()->add_messages();
  assistant->set_role("assistant");
  v1::ToolCall* call = assistant->add_tool_calls();
  call->set_name("f");
  call->set_arguments_json(R"({"a": )" + NestedArrays(200000) + "}");
  ExpectBadField(ParamsFromProto(request).status(),
                 "chat.messages[1].tool_calls[0].function.arguments");
}

TEST_F(OpenAiApiTest, InvalidUtf8NamesTheField) {
  ExpectBadField(Chat("{\"messages\": [{\"role\": \"user\", \"content\": \"a\xff\"}]}"),
                 "messages[0].content");
  ExpectBadField(Completion("{\"prompt\": \"ok\", \"stop\": [\"\xc3\"]}"), "stop[0]");
  ExpectBadField(Completion(R"({"prompt": "\ud800"})"), "prompt");
}

TEST_F(OpenAiApiTest, WrongTypesNameTheField) {
  ExpectBadField(Completion(R"({"prompt": "x", "max_tokens": "5"})"), "max_tokens");
  ExpectBadField(Completion(R"({"prompt": "x", "max_tokens": 2.5})"), "max_tokens");
  ExpectBadField(Completion(R"({"prompt": "x", "temperature": "hot"})"), "temperature");
  ExpectBadField(Completion(R"({"prompt": "x", "stream": 1})"), "stream");
  ExpectBadField(Completion(R"({"prompt": "x", "stop": 3})"), "stop");
  ExpectBadField(Completion(R"({"prompt": 3})"), "prompt");
  ExpectBadField(Completion(R"({"prompt": [1, "a"]})"), "prompt[1]");
  ExpectBadField(Chat(R"({"messages": "hi"})"), "messages");
  ExpectBadField(Chat(R"({"messages": [{"content": "hi"}]})"), "messages[0].role");
  ExpectBadField(Chat(R"({"messages": [{"role": "user", "content": 5}]})"),
                 "messages[0].content");
  ExpectBadField(Chat(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})"),
                 "logprobs");
}

TEST_F(OpenAiApiTest, OutOfRangeValuesNameTheField) {
  ExpectBadField(Completion(R"({"prompt": "x", "max_tokens": -1})"), "max_tokens");
  ExpectBadField(Completion(R"({"prompt": "x", "max_tokens": 0})"), "max_tokens");
  ExpectBadField(Completion(R"({"prompt": "x", "top_p": 1.5})"), "top_p");
  ExpectBadField(Completion(R"({"prompt": "x", "top_p": 0})"), "top_p");
  ExpectBadField(Completion(R"({"prompt": "x", "temperature": -0.1})"), "temperature");
  ExpectBadField(Completion(R"({"prompt": "x", "top_k": -2})"), "top_k");
  ExpectBadField(Completion(R"({"prompt": "x", "min_p": 2})"), "min_p");
  ExpectBadField(Completion(R"({"prompt": "x", "presence_penalty": 3})"), "presence_penalty");
  ExpectBadField(Completion(R"({"prompt": "x", "repetition_penalty": 0})"), "repetition_penalty");
  ExpectBadField(Completion(R"({"prompt": "x", "logprobs": 21})"), "logprobs");
  ExpectBadField(Completion(R"({"prompt": [2, 9999]})"), "prompt[1]");
  ExpectBadField(Completion(R"({"prompt": "x", "stop_token_ids": [-1]})"), "stop_token_ids");
  ExpectBadField(
      Chat(R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -5})"),
      "max_completion_tokens");
  ExpectBadField(Chat(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
                          "top_logprobs": 30})"),
                 "top_logprobs");
}

TEST_F(OpenAiApiTest, UnsupportedRequestsAreRefused) {
  ExpectBadField(Completion(R"({"prompt": "x", "n": 2})"), "n");
  ExpectBadField(Completion(R"({"prompt": "x", "best_of": 3})"), "best_of");
  ExpectBadField(Completion(R"({"prompt": ["a", "b"]})"), "prompt");
  ExpectBadField(Completion(R"({"model": "gpt-4", "prompt": "x"})"), "model");
  ExpectBadField(Completion(R"({"max_tokens": 1})"), "prompt");
  ExpectBadField(Chat(R"({"messages": []})"), "messages");
  ExpectBadField(Chat(R"({"messages": [{"role": "user", "content": "x"}],
                          "tool_choice": "required"})"),
                 "tool_choice");
  ExpectBadField(Chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
                 "messages[0].content[0].type");
  ExpectBadField(Chat(R"({"messages": [{"role": "wizard", "content": "x"}]})"), "messages");
  ExpectBadField(Chat(R"({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}]})"),
                 "messages[0].tool_call_id");
}

// Stop strings, as many as a JSON array of `count` copies of `stop`.
std::string StopList(int count, const std::string& stop) {
  Json list = Json::array();
  for (int i = 0; i < count; ++i) list.push_back(stop);
  return list.dump();
}

TEST_F(OpenAiApiTest, StopStringsAndStopIdsAreBoundedInCountAndLength) {
  const RequestLimits limits;  // the defaults: 64 stop strings of 256 bytes
  ASSERT_EQ(limits.max_stop_strings, 64);
  EXPECT_TRUE(Completion(R"({"prompt": "x", "stop": )" + StopList(64, "ab") + "}").ok());
  ExpectBadField(Completion(R"({"prompt": "x", "stop": )" + StopList(65, "ab") + "}"), "stop");
  EXPECT_TRUE(Completion(R"({"prompt": "x", "stop": )" + StopList(1, std::string(256, 'a')) + "}")
                  .ok());
  ExpectBadField(
      Completion(R"({"prompt": "x", "stop": )" + StopList(1, std::string(257, 'a')) + "}"), "stop");
  Json ids = Json::array();
  for (int i = 0; i < 65; ++i) ids.push_back(2);
  ExpectBadField(Completion(R"({"prompt": "x", "stop_token_ids": )" + ids.dump() + "}"),
                 "stop_token_ids");

  // Configured limits replace the defaults.
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(
      OpenAiEndpoint::kCompletions, R"({"prompt": "x", "stop": ["a", "b", "c"]})", "tiny");
  ASSERT_TRUE(parsed.ok());
  const RequestLimits two{.max_stop_strings = 2, .max_stop_string_bytes = 8};
  ExpectBadField(BuildRequest(parsed->params, *model_, kMaxModelLen, two).status(), "stop");
  parsed->params.stop = {"a", "b"};
  EXPECT_TRUE(BuildRequest(parsed->params, *model_, kMaxModelLen, two).ok());
}

TEST_F(OpenAiApiTest, PromptsLongerThanTheContextAreRefused) {
  const std::string long_text(2000, 'a');
  ExpectBadField(Completion(R"({"prompt": ")" + long_text + R"("})"), "prompt");
  ExpectBadField(Completion(R"({"prompt": "hi", "max_tokens": 256})"), "max_tokens");
  ExpectBadField(Chat(R"({"messages": [{"role": "user", "content": ")" + long_text + R"("}]})"),
                 "messages");
}

TEST_F(OpenAiApiTest, StreamOptionsAreRead) {
  absl::StatusOr<OpenAiRequest> request = ParseOpenAiRequest(
      OpenAiEndpoint::kCompletions,
      R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": true}})", "tiny");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_TRUE(request->stream);
  EXPECT_TRUE(request->include_usage);
}

TEST_F(OpenAiApiTest, ErrorJsonHasTheOpenAiShape) {
  const Json error = OpenAiErrorJson(InvalidField("top_p", "must be in (0, 1], got 1.5"));
  EXPECT_EQ(error, Json::parse(R"({"error": {"message": "top_p: must be in (0, 1], got 1.5",
      "type": "invalid_request_error", "param": "top_p", "code": 400}})"));
  const Json busy = OpenAiErrorJson(absl::ResourceExhaustedError("queue full"));
  EXPECT_EQ(busy["error"]["code"], 429);
  EXPECT_EQ(busy["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(busy["error"]["param"].is_null());
  EXPECT_EQ(HttpStatusOf(absl::UnavailableError("draining")), 503);
}

TEST(ChatOutputSplitterTest, SplitsReasoningContentAndToolCallsAcrossDeltas) {
  const std::string text =
      "<|channel>thought\nLet me think<channel|>Sure.<|tool_call>call:f{a:1}<tool_call|>";
  // Every split point gives the same pieces.
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    ChatOutputSplitter splitter;
    std::string content, reasoning;
    std::vector<text::ToolCall> calls;
    auto take = [&](const std::vector<ChatPiece>& pieces) {
      for (const ChatPiece& piece : pieces) {
        if (piece.kind == ChatPiece::Kind::kContent) content += piece.text;
        if (piece.kind == ChatPiece::Kind::kReasoning) reasoning += piece.text;
        if (piece.kind == ChatPiece::Kind::kToolCall) calls.push_back(piece.tool_call);
      }
    };
    take(splitter.Add(text.substr(0, cut)));
    take(splitter.Add(text.substr(cut)));
    take(splitter.Finish());
    EXPECT_EQ(reasoning, "Let me think") << cut;
    EXPECT_EQ(content, "Sure.") << cut;
    ASSERT_EQ(calls.size(), 1u) << cut;
    EXPECT_EQ(calls[0].name, "f");
    EXPECT_EQ(calls[0].arguments, Json::parse(R"({"a": 1})"));
  }
}

TEST(ChatOutputSplitterTest, HoldsBackOnlyPossibleMarkers) {
  ChatOutputSplitter splitter;
  std::vector<ChatPiece> pieces = splitter.Add("Hello <|chan");
  ASSERT_EQ(pieces.size(), 1u);
  EXPECT_EQ(pieces[0].text, "Hello ");
  pieces = splitter.Add("ge");  // "<|change" is no marker after all
  ASSERT_EQ(pieces.size(), 1u);
  EXPECT_EQ(pieces[0].text, "<|change");
}

TEST(ChatOutputSplitterTest, BrokenOrOpenToolCallsBecomeContent) {
  ChatOutputSplitter splitter;
  std::vector<ChatPiece> pieces = splitter.Add("<|tool_call>call:f{oops<tool_call|>x<|tool_call>");
  std::vector<ChatPiece> rest = splitter.Finish();
  pieces.insert(pieces.end(), rest.begin(), rest.end());
  std::string content;
  for (const ChatPiece& piece : pieces) {
    EXPECT_EQ(piece.kind, ChatPiece::Kind::kContent);
    content += piece.text;
  }
  EXPECT_EQ(content, "<|tool_call>call:f{oops<tool_call|>x<|tool_call>");
}

ResponseContext Context(OpenAiEndpoint endpoint, const text::Tokenizer* tokenizer) {
  return ResponseContext{.request_id = "r1", .created_s = 100, .model = "tiny",
                         .endpoint = endpoint, .tokenizer = tokenizer};
}

Event Final(FinishReason reason) {
  Event event;
  event.finished = true;
  event.finish_reason = reason;
  event.usage.prompt_tokens = 5;
  event.usage.completion_tokens = 2;
  event.usage.cached_tokens = 1;
  return event;
}

TEST_F(OpenAiApiTest, CompletionResponseJson) {
  GenerationResult result;
  Event delta;
  delta.token_ids = {40, 41};
  delta.text = "ab";
  result.Add(delta);
  result.Add(Final(FinishReason::kLength));
  const Json json =
      CompletionResponseJson(Context(OpenAiEndpoint::kCompletions, &model_->tokenizer()), result);
  EXPECT_EQ(json["id"], "cmpl-r1");
  EXPECT_EQ(json["object"], "text_completion");
  EXPECT_EQ(json["created"], 100);
  EXPECT_EQ(json["model"], "tiny");
  EXPECT_EQ(json["choices"][0]["text"], "ab");
  EXPECT_EQ(json["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(json["usage"], Json::parse(R"({"prompt_tokens": 5, "completion_tokens": 2,
      "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 1}})"));
}

TEST_F(OpenAiApiTest, ChatResponseCarriesReasoningAndToolCalls) {
  GenerationResult result;
  Event delta;
  delta.text = "<|channel>thought\nhmm<channel|><|tool_call>call:get{x:<|\"|>y<|\"|>}<tool_call|>";
  result.Add(delta);
  result.Add(Final(FinishReason::kStop));
  const Json json =
      ChatResponseJson(Context(OpenAiEndpoint::kChatCompletions, &model_->tokenizer()), result);
  const Json& message = json["choices"][0]["message"];
  EXPECT_EQ(json["object"], "chat.completion");
  EXPECT_EQ(message["role"], "assistant");
  EXPECT_TRUE(message["content"].is_null());
  EXPECT_EQ(message["reasoning_content"], "hmm");
  EXPECT_EQ(message["tool_calls"][0]["id"], "call_r1_0");
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get");
  EXPECT_EQ(Json::parse(message["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            Json::parse(R"({"x": "y"})"));
  EXPECT_EQ(json["choices"][0]["finish_reason"], "tool_calls");
}

TEST_F(OpenAiApiTest, ChatLogprobsHaveTokensBytesAndAlternatives) {
  GenerationResult result;
  Event delta;
  delta.text = "a";
  delta.token_ids = {40};
  internal::v1::TokenLogprob logprob;
  logprob.set_token_id(40);
  logprob.set_logprob(-0.5f);
  delta.logprobs = {logprob};
  delta.top_logprobs = {{logprob, logprob}};
  result.Add(delta);
  result.Add(Final(FinishReason::kStop));
  ResponseContext context = Context(OpenAiEndpoint::kChatCompletions, &model_->tokenizer());
  context.logprobs = true;
  const Json json = ChatResponseJson(context, result);
  const Json& entry = json["choices"][0]["logprobs"]["content"][0];
  const std::string token = *model_->tokenizer().Decode({40});
  EXPECT_EQ(entry["token"], token);
  EXPECT_EQ(entry["logprob"], -0.5);
  EXPECT_EQ(entry["bytes"].size(), token.size());
  EXPECT_EQ(entry["top_logprobs"].size(), 2u);
}

// Splits SSE text into its data payloads, checking the framing.
std::vector<std::string> SsePayloads(const std::string& sse) {
  std::vector<std::string> payloads;
  size_t pos = 0;
  while (pos < sse.size()) {
    EXPECT_EQ(sse.compare(pos, 6, "data: "), 0) << sse.substr(pos);
    const size_t end = sse.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos);
    payloads.push_back(sse.substr(pos + 6, end - pos - 6));
    pos = end + 2;
  }
  return payloads;
}

internal::v1::TokenLogprob Logprob(int32_t token_id, float logprob) {
  internal::v1::TokenLogprob entry;
  entry.set_token_id(token_id);
  entry.set_logprob(logprob);
  return entry;
}

// A completion of prompt [2, 40, 41] (<bos> and two tokens) with echo and logprobs: the first
// event carries the prompt's logprobs, one per prompt token after the first.
Event EchoedFirstEvent() {
  Event event;
  event.text = "c";
  event.token_ids = {42};
  event.logprobs = {Logprob(42, -0.3f)};
  event.top_logprobs = {{Logprob(42, -0.3f)}};
  event.prompt_logprobs = {Logprob(40, -1.5f), Logprob(41, -2.5f)};
  event.prompt_top_logprobs = {{Logprob(43, -0.5f)}, {Logprob(41, -2.5f)}};
  return event;
}

ResponseContext EchoContext(const text::Tokenizer* tokenizer) {
  ResponseContext context = Context(OpenAiEndpoint::kCompletions, tokenizer);
  context.logprobs = true;
  context.echo = true;
  context.prompt_ids = {2, 40, 41};
  return context;
}

TEST_F(OpenAiApiTest, EchoedCompletionStartsWithThePromptAndItsLogprobs) {
  const text::Tokenizer& tokenizer = model_->tokenizer();
  GenerationResult result;
  result.Add(EchoedFirstEvent());
  result.Add(Final(FinishReason::kLength));
  const Json json = CompletionResponseJson(EchoContext(&tokenizer), result);
  const std::string prompt_text = *tokenizer.Decode({2, 40, 41});
  EXPECT_EQ(json["choices"][0]["text"], prompt_text + "c");
  const Json& logprobs = json["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["tokens"].size(), 4u);
  EXPECT_EQ(logprobs["tokens"][3], *tokenizer.Decode({42}));
  EXPECT_TRUE(logprobs["token_logprobs"][0].is_null());  // nothing predicts the first token
  EXPECT_TRUE(logprobs["top_logprobs"][0].is_null());
  EXPECT_EQ(logprobs["token_logprobs"][1], -1.5);
  EXPECT_EQ(logprobs["token_logprobs"][2], -2.5);
  EXPECT_EQ(logprobs["token_logprobs"][3], Json(-0.3f));
  EXPECT_EQ(logprobs["top_logprobs"][1][*tokenizer.Decode({43})], -0.5);
  // Text offsets run through the prompt's tokens into the completion's.
  EXPECT_EQ(logprobs["text_offset"][0], 0);
  EXPECT_EQ(logprobs["text_offset"][3], static_cast<int64_t>(prompt_text.size()));
}

TEST_F(OpenAiApiTest, EchoedStreamSendsThePromptInItsOwnFirstChunk) {
  const text::Tokenizer& tokenizer = model_->tokenizer();
  OpenAiStreamFormatter formatter(EchoContext(&tokenizer));
  std::string sse = formatter.Format(EchoedFirstEvent());
  Event next;
  next.text = "d";
  next.token_ids = {43};
  next.logprobs = {Logprob(43, -0.1f)};
  sse += formatter.Format(next);
  sse += formatter.Format(Final(FinishReason::kLength));
  const std::vector<std::string> payloads = SsePayloads(sse);
  ASSERT_EQ(payloads.size(), 5u) << sse;
  const Json prompt = Json::parse(payloads[0])["choices"][0];
  EXPECT_EQ(prompt["text"], *tokenizer.Decode({2, 40, 41}));
  EXPECT_EQ(prompt["logprobs"]["token_logprobs"].size(), 3u);
  EXPECT_TRUE(prompt["logprobs"]["token_logprobs"][0].is_null());
  EXPECT_EQ(Json::parse(payloads[1])["choices"][0]["text"], "c");
  EXPECT_EQ(Json::parse(payloads[2])["choices"][0]["text"], "d");
  EXPECT_EQ(payloads[4], "[DONE]");
}

TEST_F(OpenAiApiTest, CompletionStreamChunksThenUsageThenDone) {
  ResponseContext context = Context(OpenAiEndpoint::kCompletions, &model_->tokenizer());
  context.include_usage = true;
  OpenAiStreamFormatter formatter(context);
  Event delta;
  delta.text = "He";
  delta.token_ids = {40};
  std::string sse = formatter.Format(delta);
  sse += formatter.Format(Final(FinishReason::kStop));
  const std::vector<std::string> payloads = SsePayloads(sse);
  ASSERT_EQ(payloads.size(), 4u);
  const Json first = Json::parse(payloads[0]);
  EXPECT_EQ(first["object"], "text_completion");
  EXPECT_EQ(first["choices"][0]["text"], "He");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(first["usage"].is_null());
  EXPECT_EQ(Json::parse(payloads[1])["choices"][0]["finish_reason"], "stop");
  const Json usage = Json::parse(payloads[2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
  EXPECT_EQ(payloads[3], "[DONE]");
}

TEST_F(OpenAiApiTest, ChatStreamSendsRoleThenTypedDeltas) {
  OpenAiStreamFormatter formatter(Context(OpenAiEndpoint::kChatCompletions, &model_->tokenizer()));
  Event delta;
  delta.text = "<|channel>thought\nhm";
  std::string sse = formatter.Format(delta);
  delta.text = "<channel|>Hi";
  sse += formatter.Format(delta);
  sse += formatter.Format(Final(FinishReason::kStop));
  const std::vector<std::string> payloads = SsePayloads(sse);
  ASSERT_EQ(payloads.size(), 5u) << sse;
  EXPECT_EQ(Json::parse(payloads[0])["choices"][0]["delta"],
            Json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_EQ(Json::parse(payloads[1])["choices"][0]["delta"],
            Json::parse(R"({"reasoning_content": "hm"})"));
  EXPECT_EQ(Json::parse(payloads[2])["choices"][0]["delta"], Json::parse(R"({"content": "Hi"})"));
  EXPECT_EQ(Json::parse(payloads[3])["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(Json::parse(payloads[3]).contains("usage"));
  EXPECT_EQ(payloads[4], "[DONE]");
}

TEST_F(OpenAiApiTest, ChatStreamLogprobsRideWithTheTextOfTheirTokens) {
  ResponseContext context = Context(OpenAiEndpoint::kChatCompletions, &model_->tokenizer());
  context.logprobs = true;
  OpenAiStreamFormatter formatter(context);
  Event first;
  first.text = "Hi";
  first.token_ids = {40};
  first.logprobs = {Logprob(40, -0.5f)};
  std::string sse = formatter.Format(first);
  Event no_text;  // e.g. the first half of a multi-byte character: nothing to send yet
  no_text.token_ids = {41};
  no_text.logprobs = {Logprob(41, -1.0f)};
  sse += formatter.Format(no_text);
  Event more;
  more.text = " there";
  more.token_ids = {42};
  more.logprobs = {Logprob(42, -1.5f)};
  sse += formatter.Format(more);
  Event last = Final(FinishReason::kStop);  // the stop token: no text
  last.token_ids = {1};
  last.logprobs = {Logprob(1, -0.25f)};
  sse += formatter.Format(last);
  const std::vector<std::string> payloads = SsePayloads(sse);
  ASSERT_EQ(payloads.size(), 6u) << sse;  // role, "Hi", " there", stop token, finish, [DONE]
  const Json hi = Json::parse(payloads[1])["choices"][0];
  EXPECT_EQ(hi["delta"], Json::parse(R"({"content": "Hi"})"));
  ASSERT_EQ(hi["logprobs"]["content"].size(), 1u) << sse;
  EXPECT_EQ(hi["logprobs"]["content"][0]["logprob"], -0.5);
  const Json there = Json::parse(payloads[2])["choices"][0];
  EXPECT_EQ(there["delta"], Json::parse(R"({"content": " there"})"));
  ASSERT_EQ(there["logprobs"]["content"].size(), 2u) << sse;
  EXPECT_EQ(there["logprobs"]["content"][0]["logprob"], -1.0);
  EXPECT_EQ(there["logprobs"]["content"][1]["logprob"], -1.5);
  const Json stop_token = Json::parse(payloads[3])["choices"][0];
  EXPECT_EQ(stop_token["delta"], Json::object());
  ASSERT_EQ(stop_token["logprobs"]["content"].size(), 1u) << sse;
  EXPECT_EQ(stop_token["logprobs"]["content"][0]["logprob"], -0.25);
  EXPECT_EQ(Json::parse(payloads[4])["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(payloads[5], "[DONE]");
}

TEST_F(OpenAiApiTest, StreamErrorsBecomeAnErrorEvent) {
  OpenAiStreamFormatter formatter(Context(OpenAiEndpoint::kCompletions, &model_->tokenizer()));
  Event failed = Final(FinishReason::kError);
  failed.error = "worker 1 lost";
  const std::vector<std::string> payloads = SsePayloads(formatter.Format(failed));
  ASSERT_EQ(payloads.size(), 2u);
  EXPECT_EQ(Json::parse(payloads[0])["error"]["message"], "worker 1 lost");
  EXPECT_EQ(Json::parse(payloads[0])["error"]["type"], "server_error");
  EXPECT_EQ(payloads[1], "[DONE]");
}

}  // namespace
}  // namespace gemmaserve::coordinator::api
