// Secrets the servers check (API keys, the cluster secret) and the random identifiers they hand
// out. A presented secret is compared through its SHA-256 digest in constant time, so neither the
// comparison's duration nor an early exit tells an attacker how much of a guess was right, and a
// digest is all the server keeps in memory after start-up. Random bytes come from OpenSSL's
// CSPRNG. Pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace gemmaserve {

using SecretDigest = std::array<uint8_t, 32>;  // SHA-256

SecretDigest DigestOf(std::string_view secret);
// Compares every byte whatever the first difference.
bool DigestsEqual(const SecretDigest& a, const SecretDigest& b);

// The token of an "Authorization: Bearer TOKEN" value (the scheme case-insensitive, one or more
// spaces after it); nullopt for any other form.
std::optional<std::string_view> BearerToken(std::string_view authorization);

// A secret read from `path` with surrounding whitespace (the trailing newline) removed.
// NOT_FOUND / PERMISSION_DENIED naming `what` and the path when it cannot be read,
// INVALID_ARGUMENT when it is empty or holds a character outside printable ASCII.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& what);
// The same checks for a secret given inline (a flag or an environment variable).
absl::Status CheckSecret(std::string_view secret, const std::string& what);

// The whole of a credential file (a PEM certificate or key). NOT_FOUND naming `what` and the
// path when it cannot be read, INVALID_ARGUMENT when it is empty.
absl::StatusOr<std::string> ReadCredentialFile(const std::string& path, const std::string& what);

// 2 * num_bytes lowercase hex digits of cryptographically random bytes.
std::string RandomHex(int num_bytes);

}  // namespace gemmaserve
