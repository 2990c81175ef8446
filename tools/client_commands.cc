// gemmaserve generate / chat: clients of a running server's gRPC Inference API that stream the
// generated text to the terminal as it arrives.
//
//   gemmaserve generate --server HOST:50051 (--prompt TEXT | --prompt-ids 2,17,40) [sampling]
//   gemmaserve chat --server HOST:50051 --message TEXT [--system TEXT] [--thinking] [sampling]
//
// Text goes to stdout; for chat, reasoning goes to stderr. A summary line (finish reason, token
// counts, time to first token) goes to stderr at the end. Interrupting the command drops the
// call, and the server aborts the request.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/grpc_status.h"
#include "coordinator/api/chat_output.h"
#include "gemmaserve/v1/inference.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace gemmaserve::tools {
namespace {

using coordinator::api::ChatOutputSplitter;
using coordinator::api::ChatPiece;

// Sampling flags shared by both commands; unset flags stay unset so the server's defaults apply.
struct SamplingFlags {
  int64_t max_tokens = 256;
  double temperature = 0;
  int64_t top_k = 0;
  double top_p = 1;
  double min_p = 0;
  int64_t seed = 0;
  std::string stop;
  bool ignore_eos = false;

  void Declare(FlagSet* flags) {
    flags->Int("max-tokens", &max_tokens, "new tokens at most");
    flags->Double("temperature", &temperature, "sampling temperature (0 = greedy); default: model's");
    flags->Int("top-k", &top_k, "top-k (0 = off); default: the model's");
    flags->Double("top-p", &top_p, "top-p; default: the model's");
    flags->Double("min-p", &min_p, "min-p; default: the model's");
    flags->Int("seed", &seed, "sampling seed");
    flags->String("stop", &stop, "a stop string");
    flags->Bool("ignore-eos", &ignore_eos, "generate past end-of-sequence tokens");
  }

  void Apply(const FlagSet& flags, v1::GenerateRequest* request) const {
    request->set_max_tokens(static_cast<int32_t>(max_tokens));
    if (flags.IsSet("temperature")) request->set_temperature(static_cast<float>(temperature));
    if (flags.IsSet("top-k")) request->set_top_k(static_cast<int32_t>(top_k));
    if (flags.IsSet("top-p")) request->set_top_p(static_cast<float>(top_p));
    if (flags.IsSet("min-p")) request->set_min_p(static_cast<float>(min_p));
    if (flags.IsSet("seed")) request->set_seed(static_cast<uint64_t>(seed));
    if (!stop.empty()) request->add_stop(stop);
    if (ignore_eos) request->set_ignore_eos(true);
  }
};

const char* FinishReasonText(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    case v1::FINISH_REASON_ERROR:
      return "error";
    default:
      return "unspecified";
  }
}

void PrintPieces(const std::vector<ChatPiece>& pieces) {
  for (const ChatPiece& piece : pieces) {
    if (piece.kind == ChatPiece::Kind::kContent) std::cout << piece.text << std::flush;
    if (piece.kind == ChatPiece::Kind::kReasoning) std::cerr << piece.text << std::flush;
    if (piece.kind == ChatPiece::Kind::kToolCall) {
      std::cout << "\n[tool call " << piece.tool_call.name << " "
                << piece.tool_call.arguments.dump() << "]\n" << std::flush;
    }
  }
}

// Sends `request` and streams its output; `chat` splits reasoning and tool calls out.
absl::Status Stream(const std::string& server, const v1::GenerateRequest& request, bool chat) {
  auto stub = v1::Inference::NewStub(
      grpc::CreateChannel(server, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, request);
  ChatOutputSplitter splitter;
  v1::GenerateResponse response;
  v1::Final final;
  while (reader->Read(&response)) {
    if (response.has_final()) {
      final = response.final();
      continue;
    }
    if (chat) {
      PrintPieces(splitter.Add(response.delta().text()));
    } else {
      std::cout << response.delta().text() << std::flush;
    }
  }
  if (chat) PrintPieces(splitter.Finish());
  std::cout << "\n";
  const absl::Status status = FromGrpc(reader->Finish(), absl::StrCat("Generate on ", server));
  if (!status.ok()) return status;
  std::cerr << absl::StrFormat(
      "[%s] %s: %d prompt + %d completion tokens (%d cached), ttft %.1f ms, total %.1f ms\n",
      response.request_id(), FinishReasonText(final.finish_reason()), final.usage().prompt_tokens(),
      final.usage().completion_tokens(), final.usage().cached_tokens(), final.timings().ttft_ms(),
      final.timings().total_ms());
  if (final.finish_reason() == v1::FINISH_REASON_ERROR) {
    return absl::InternalError(absl::StrCat("the server failed the request: ", final.error()));
  }
  return absl::OkStatus();
}

}  // namespace

int GenerateMain(int argc, char** argv) {
  std::string server = "localhost:50051";
  std::string prompt;
  std::vector<int64_t> prompt_ids;
  SamplingFlags sampling;
  FlagSet flags("generate", "Stream a completion of a prompt from a gemmaserve server (gRPC).");
  flags.String("server", &server, "the server's gRPC address, HOST:PORT");
  flags.String("prompt", &prompt, "prompt text (the server puts the BOS token in front)");
  flags.IntList("prompt-ids", &prompt_ids, "prompt token ids, used as given");
  sampling.Declare(&flags);
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&]() -> absl::Status {
    if (flags.IsSet("prompt") == flags.IsSet("prompt-ids")) {
      return absl::InvalidArgumentError("give exactly one of --prompt and --prompt-ids");
    }
    v1::GenerateRequest request;
    if (flags.IsSet("prompt")) {
      request.set_text(prompt);
    } else {
      for (int64_t id : prompt_ids) request.mutable_token_ids()->add_ids(static_cast<int32_t>(id));
    }
    sampling.Apply(flags, &request);
    return Stream(server, request, /*chat=*/false);
  });
}

int ChatMain(int argc, char** argv) {
  std::string server = "localhost:50051";
  std::string message;
  std::string system;
  bool thinking = false;
  SamplingFlags sampling;
  FlagSet flags("chat", "Stream a chat answer from a gemmaserve server (gRPC).");
  flags.String("server", &server, "the server's gRPC address, HOST:PORT");
  flags.String("message", &message, "the user message", /*required=*/true);
  flags.String("system", &system, "a system prompt");
  flags.Bool("thinking", &thinking, "let the model reason first (printed to stderr)");
  sampling.Declare(&flags);
  const absl::Status parsed = flags.Parse(argc, argv);
  return RunCommand(flags, parsed, [&]() -> absl::Status {
    v1::GenerateRequest request;
    if (!system.empty()) {
      v1::ChatMessage* turn = request.mutable_chat()->add_messages();
      turn->set_role("system");
      turn->set_content(system);
    }
    v1::ChatMessage* turn = request.mutable_chat()->add_messages();
    turn->set_role("user");
    turn->set_content(message);
    if (thinking) request.set_thinking(true);
    sampling.Apply(flags, &request);
    return Stream(server, request, /*chat=*/true);
  });
}

}  // namespace gemmaserve::tools
