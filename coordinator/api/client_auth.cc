#include "coordinator/api/client_auth.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace gemmaserve::coordinator::api {
namespace {

std::string KeyId(const SecretDigest& digest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string id = "key-";
  for (int i = 0; i < 8; ++i) {
    id.push_back(kDigits[digest[i] >> 4]);
    id.push_back(kDigits[digest[i] & 15]);
  }
  return id;
}

}  // namespace

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::vector<std::string>& keys,
                                      const std::string& key_file, std::string_view env_value) {
  std::vector<std::pair<std::string, std::string>> sourced;  // (key, where it came from)
  for (const std::string& key : keys) sourced.emplace_back(key, "--api-key");
  if (!key_file.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadCredentialFile(key_file, "--api-key-file"));
    int line_number = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      ++line_number;
      line = absl::StripAsciiWhitespace(line);
      if (line.empty() || line[0] == '#') continue;
      sourced.emplace_back(std::string(line),
                           absl::StrCat("--api-key-file ", key_file, " line ", line_number));
    }
  }
  for (absl::string_view key : absl::StrSplit(absl::string_view(env_value.data(), env_value.size()),
                                              ',', absl::SkipWhitespace())) {
    sourced.emplace_back(std::string(absl::StripAsciiWhitespace(key)), "GEMMASERVE_API_KEY");
  }
  ApiKeys api_keys;
  for (const auto& [key, source] : sourced) {
    RETURN_IF_ERROR(CheckSecret(key, source));
    api_keys.digests_.push_back(DigestOf(key));
  }
  return api_keys;
}

absl::StatusOr<std::string> ApiKeys::Authenticate(std::string_view authorization) const {
  if (!enabled()) return std::string();
  const std::optional<std::string_view> token = BearerToken(authorization);
  if (!token) {
    return absl::UnauthenticatedError("missing API key: send it as \"Authorization: Bearer KEY\"");
  }
  const SecretDigest digest = DigestOf(*token);
  // Every key is compared, so the time taken does not say which one (if any) matched.
  int match = -1;
  for (size_t i = 0; i < digests_.size(); ++i) {
    if (DigestsEqual(digest, digests_[i])) match = static_cast<int>(i);
  }
  if (match < 0) return absl::UnauthenticatedError("invalid API key");
  return KeyId(digests_[static_cast<size_t>(match)]);
}

}  // namespace gemmaserve::coordinator::api
