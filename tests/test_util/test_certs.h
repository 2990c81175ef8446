// TestCertificates: a throwaway certificate authority and two certificates it signed, made with
// the `openssl` command in a fresh temporary directory that is removed again at destruction:
// a server certificate for 127.0.0.1 and localhost (usable as a client certificate too, as
// `serve`'s local workers use the coordinator's) and a client certificate. Valid for two days.
// Test-only.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace gemmaserve::testing {

struct TestCertificates {
  static absl::StatusOr<std::unique_ptr<TestCertificates>> Create();
  ~TestCertificates();

  // Paths of PEM files.
  std::string dir;
  std::string ca_cert;
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
};

// The whole of a file (e.g. a PEM) as a string; empty when it cannot be read.
std::string ReadWholeFile(const std::string& path);

}  // namespace gemmaserve::testing
