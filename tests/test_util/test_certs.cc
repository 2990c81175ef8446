#include "tests/test_util/test_certs.h"

#include <stdlib.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/test_util/child_process.h"

namespace gemmaserve::testing {
namespace {

absl::Status Openssl(const std::string& dir, std::vector<std::string> args) {
  args.insert(args.begin(), "/usr/bin/openssl");
  ChildOptions options;
  options.set_env = {{"OPENSSL_CONF", "/dev/null"}};
  const ProcessResult run = RunProcess(args, absl::Seconds(30), options);
  if (run.exit_code == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("openssl ", args[1], " in ", dir, ": ", run.output));
}

// A key and a certificate for `name` signed by the CA in `dir`, with `extensions` (x509v3).
absl::Status SignedCertificate(const std::string& dir, const std::string& name,
                               const std::string& extensions) {
  const std::string base = absl::StrCat(dir, "/", name);
  if (absl::Status s = Openssl(
          dir, {"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", base + ".key", "-out", base + ".csr", "-subj", "/CN=" + name});
      !s.ok()) {
    return s;
  }
  std::ofstream(base + ".ext") << extensions;
  return Openssl(
      dir, {"x509", "-req", "-in", base + ".csr", "-CA", dir + "/ca.crt", "-CAkey", dir + "/ca.key",
            "-CAcreateserial", "-days", "2", "-out", base + ".crt", "-extfile", base + ".ext"});
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestCertificates>> TestCertificates::Create() {
  char dir_template[] = "/tmp/gemmaserve-certs-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) return absl::InternalError("mkdtemp failed");
  auto certs = std::make_unique<TestCertificates>();
  certs->dir = dir_template;
  const std::string& dir = certs->dir;
  absl::Status status = Openssl(
      dir, {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", dir + "/ca.key", "-out", dir + "/ca.crt", "-days", "2", "-subj",
            "/CN=gemmaserve-test-ca", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
            "keyUsage=critical,keyCertSign"});
  if (status.ok()) {
    status = SignedCertificate(dir, "server",
                               "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "extendedKeyUsage=serverAuth,clientAuth\n");
  }
  if (status.ok()) status = SignedCertificate(dir, "client", "extendedKeyUsage=clientAuth\n");
  if (!status.ok()) return status;
  certs->ca_cert = dir + "/ca.crt";
  certs->server_cert = dir + "/server.crt";
  certs->server_key = dir + "/server.key";
  certs->client_cert = dir + "/client.crt";
  certs->client_key = dir + "/client.key";
  return certs;
}

TestCertificates::~TestCertificates() {
  if (!dir.empty()) RunProcess({"/bin/rm", "-rf", dir}, absl::Seconds(30));
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

}  // namespace gemmaserve::testing
