// The client APIs' request path, as far as the engine: an OpenAI /v1/completions or
// /v1/chat/completions body (tools, tool calls and results included) through ParseOpenAiRequest,
// or a gRPC GenerateRequest / TokenizeRequest through ParamsFromProto, then BuildRequest, which
// validates, renders the chat template and tokenizes. The first byte picks the path.
#include <cstdint>
#include <string_view>

#include "coordinator/api/generate_params.h"
#include "coordinator/api/openai_request.h"
#include "coordinator/api/proto_convert.h"
#include "tests/fuzz/fuzz_util.h"

namespace api = gemmaserve::coordinator::api;

namespace {

constexpr int64_t kMaxModelLen = 4096;

void Build(absl::StatusOr<api::GenerateParams> params) {
  if (!params.ok()) return;
  params->request_id = "fuzz";
  (void)api::BuildRequest(*std::move(params), gemmaserve::fuzz::TinyModel(), kMaxModelLen);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
    case 1: {
      const api::OpenAiEndpoint endpoint = data[0] % 4 == 0 ? api::OpenAiEndpoint::kCompletions
                                                            : api::OpenAiEndpoint::kChatCompletions;
      absl::StatusOr<api::OpenAiRequest> parsed = api::ParseOpenAiRequest(endpoint, body, "tiny");
      if (parsed.ok()) Build(std::move(parsed->params));
      break;
    }
    case 2: {
      gemmaserve::v1::GenerateRequest request;
      if (request.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
        Build(api::ParamsFromProto(request));
      }
      break;
    }
    default: {
      gemmaserve::v1::TokenizeRequest request;
      if (!request.ParseFromArray(body.data(), static_cast<int>(body.size()))) break;
      absl::StatusOr<api::GenerateParams> params = api::ParamsFromProto(request);
      if (params.ok()) (void)api::PromptIds(*params, gemmaserve::fuzz::TinyModel());
      break;
    }
  }
  return 0;
}
