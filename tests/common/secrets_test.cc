#include "common/secrets.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>

#include "gtest/gtest.h"

namespace gemmaserve {
namespace {

TEST(SecretsTest, DigestsOfEqualSecretsAreEqualAndOfDifferentOnesDiffer) {
  EXPECT_TRUE(DigestsEqual(DigestOf("sk-one"), DigestOf("sk-one")));
  EXPECT_FALSE(DigestsEqual(DigestOf("sk-one"), DigestOf("sk-onf")));
  EXPECT_FALSE(DigestsEqual(DigestOf("sk-one"), DigestOf("sk-one ")));
  EXPECT_FALSE(DigestsEqual(DigestOf(""), DigestOf("x")));
}

TEST(SecretsTest, BearerTokenTakesTheSchemeCaseInsensitivelyAndRefusesOtherForms) {
  EXPECT_EQ(BearerToken("Bearer abc"), "abc");
  EXPECT_EQ(BearerToken("bearer   abc"), "abc");
  EXPECT_EQ(BearerToken("BEARER abc"), "abc");
  EXPECT_EQ(BearerToken("Basic abc"), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer"), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer "), std::nullopt);
  EXPECT_EQ(BearerToken("Bearerabc"), std::nullopt);
  EXPECT_EQ(BearerToken(""), std::nullopt);
}

TEST(SecretsTest, SecretFileIsTrimmedAndCheckedNamingThePath) {
  char path[] = "/tmp/gemmaserve-secret-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "  s3cret-value\n";
  EXPECT_EQ(ReadSecretFile(path, "--cluster-secret-file").value(), "s3cret-value");

  std::ofstream(path) << "\n";
  const absl::StatusOr<std::string> empty = ReadSecretFile(path, "--cluster-secret-file");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find(path), std::string::npos) << empty.status();

  std::ofstream(path) << "two words";
  EXPECT_EQ(ReadSecretFile(path, "x").status().code(), absl::StatusCode::kInvalidArgument);
  std::remove(path);

  const absl::StatusOr<std::string> missing = ReadSecretFile(path, "--api-key-file");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("--api-key-file"), std::string::npos);
}

TEST(SecretsTest, RandomHexHasTheAskedLengthAndDoesNotRepeat) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string hex = RandomHex(8);
    ASSERT_EQ(hex.size(), 16u);
    EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos) << hex;
    seen.insert(hex);
  }
  EXPECT_EQ(seen.size(), 100u);
}

}  // namespace
}  // namespace gemmaserve
