#include "common/secrets.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace gemmaserve {

SecretDigest DigestOf(std::string_view secret) {
  SecretDigest digest;
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), digest.data());
  return digest;
}

bool DigestsEqual(const SecretDigest& a, const SecretDigest& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::optional<std::string_view> BearerToken(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(absl::string_view(authorization.data(), kScheme.size()),
                              absl::string_view(kScheme.data(), kScheme.size()))) {
    return std::nullopt;
  }
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

absl::Status CheckSecret(std::string_view secret, const std::string& what) {
  if (secret.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": empty"));
  for (char c : secret) {
    // Printable ASCII without spaces: what fits in an HTTP header or gRPC metadata unchanged.
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": holds a character outside printable ASCII (space and control characters too)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadCredentialFile(const std::string& path, const std::string& what) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    const int error = errno;
    const std::string message =
        absl::StrCat(what, ": cannot read ", path, ": ", std::strerror(error));
    return error == EACCES ? absl::PermissionDeniedError(message) : absl::NotFoundError(message);
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  if (contents.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " is empty"));
  }
  return contents.str();
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& what) {
  absl::StatusOr<std::string> contents = ReadCredentialFile(path, what);
  if (!contents.ok() && !absl::IsInvalidArgument(contents.status())) return contents.status();
  std::string secret(absl::StripAsciiWhitespace(contents.value_or("")));
  if (absl::Status status = CheckSecret(secret, absl::StrCat(what, " (", path, ")"));
      !status.ok()) {
    return status;
  }
  return secret;
}

std::string RandomHex(int num_bytes) {
  std::vector<unsigned char> bytes(static_cast<size_t>(num_bytes));
  CHECK(RAND_bytes(bytes.data(), num_bytes) == 1) << "OpenSSL's RAND_bytes failed";
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (unsigned char byte : bytes) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 15]);
  }
  return hex;
}

}  // namespace gemmaserve
