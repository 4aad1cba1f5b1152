// The cluster PKI end to end: CA, CSR, signing, inspection and verification, the refusals, the
// private-file writer, and the fingerprint checked against the real openssl CLI.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <string>

#include "agent/cluster/pki.hpp"
#include "tests/support/test_support.hpp"

namespace pki = neco::cluster;
using namespace std::chrono_literals;
using SysClock = std::chrono::system_clock;

namespace {

pki::CertPem make_ca(const std::string& cn = "neco test CA") {
  auto ca = pki::create_ca(cn, 24h);
  REQUIRE(ca);
  return *ca;
}

pki::IssueOptions client_options(const std::string& cn) {
  pki::IssueOptions o;
  o.common_name = cn;
  o.validity = 1h;
  return o;
}

// Runs a shell command and returns its stdout; fails the test on a non-zero exit.
std::string run(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0)
    out.append(buf.data(), n);
  const int status = ::pclose(p);
  INFO(command);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  return out;
}

}  // namespace

TEST_CASE("PKI creates a CA, signs a CSR and verifies the result", "[cluster][pki]") {
  const auto ca = make_ca();
  CHECK(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
  CHECK(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));  // PKCS#8
  auto ca_info = pki::inspect_cert(ca.cert_pem);
  REQUIRE(ca_info);
  CHECK(ca_info->common_name == "neco test CA");
  CHECK(ca_info->is_ca);
  CHECK(ca_info->not_before <= SysClock::now() - 4min);
  CHECK(ca_info->not_after > SysClock::now() + 23h);
  CHECK(ca_info->serial_hex.size() >= 16);
  CHECK(ca_info->serial_hex.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(pki::verify_cert(ca.cert_pem, ca.cert_pem));  // a root verifies against itself

  auto key = pki::generate_key_pem();
  REQUIRE(key);
  auto csr = pki::create_csr(*key, "node-1");
  REQUIRE(csr);
  CHECK(csr->starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
  auto csr_info = pki::inspect_csr(*csr);
  REQUIRE(csr_info);
  CHECK(csr_info->common_name == "node-1");

  auto options = client_options("node-1");
  options.server = true;
  options.dns_names = {"node-1", "node-1.cluster.local"};
  options.ip_addresses = {"10.0.0.1", "::1"};
  auto cert = pki::sign_csr(*csr, ca, options);
  REQUIRE(cert);
  auto info = pki::inspect_cert(*cert);
  REQUIRE(info);
  CHECK(info->common_name == "node-1");
  CHECK_FALSE(info->is_ca);
  CHECK(info->not_before <= SysClock::now() - 4min);
  CHECK(info->not_before > SysClock::now() - 6min);
  CHECK(info->not_after > SysClock::now() + 59min);
  CHECK(info->not_after <= SysClock::now() + 1h);
  CHECK(info->serial_hex != ca_info->serial_hex);
  CHECK(pki::verify_cert(*cert, ca.cert_pem));

  // The extensions as openssl itself reads them.
  neco::testing::TempDir dir;
  neco::testing::write_file(dir / "cert.pem", *cert);
  const auto text = run("openssl x509 -noout -text -in " + dir.file("cert.pem"));
  CHECK(text.find("CA:FALSE") != std::string::npos);
  CHECK(text.find("TLS Web Server Authentication, TLS Web Client Authentication") !=
        std::string::npos);
  CHECK(text.find("DNS:node-1, DNS:node-1.cluster.local, IP Address:10.0.0.1, IP "
                  "Address:0:0:0:0:0:0:0:1") != std::string::npos);
  CHECK(text.find("X509v3 Authority Key Identifier") != std::string::npos);
  CHECK(text.find("prime256v1") != std::string::npos);
  neco::testing::write_file(dir / "ca.pem", ca.cert_pem);
  const auto ca_text = run("openssl x509 -noout -text -in " + dir.file("ca.pem"));
  CHECK(ca_text.find("X509v3 Basic Constraints: critical\n                CA:TRUE") !=
        std::string::npos);
  CHECK(ca_text.find("Certificate Sign, CRL Sign") != std::string::npos);
  CHECK(ca_text.find("X509v3 Subject Key Identifier") != std::string::npos);
  // And openssl agrees that it verifies.
  CHECK(run("openssl verify -CAfile " + dir.file("ca.pem") + " " + dir.file("cert.pem"))
            .find(": OK") != std::string::npos);
}

TEST_CASE("PKI issues a key and certificate in one step", "[cluster][pki]") {
  const auto ca = make_ca();
  auto options = client_options("controller-a");
  options.server = true;
  auto issued = pki::issue_key_and_cert(ca, options);
  REQUIRE(issued);
  CHECK(pki::verify_cert(issued->cert_pem, ca.cert_pem));
  CHECK(pki::inspect_cert(issued->cert_pem)->common_name == "controller-a");
  // The key belongs to the certificate: a CSR made from it signs cleanly for the same CN.
  auto csr = pki::create_csr(issued->key_pem, "controller-a");
  REQUIRE(csr);
  CHECK(pki::sign_csr(*csr, ca, options));
}

TEST_CASE("PKI refuses a certificate from another CA", "[cluster][pki]") {
  const auto ca = make_ca();
  const auto other = make_ca("other CA");  // same CN would not matter: the key differs
  auto issued = pki::issue_key_and_cert(other, client_options("intruder"));
  REQUIRE(issued);
  auto v = pki::verify_cert(issued->cert_pem, ca.cert_pem);
  REQUIRE_FALSE(v);
  CHECK(v.error().code == neco::Errc::failed_precondition);
  CHECK(v.error().message.find("unable to get local issuer certificate") != std::string::npos);

  const auto twin = make_ca("neco test CA");
  auto from_twin = pki::issue_key_and_cert(twin, client_options("twin"));
  REQUIRE(from_twin);
  CHECK_FALSE(pki::verify_cert(from_twin->cert_pem, ca.cert_pem));
  // A leaf is not a CA: nothing it "signs" counts, and it cannot sign at all.
  CHECK_FALSE(pki::sign_csr(*pki::create_csr(*pki::generate_key_pem(), "x"),
                            pki::CertPem{issued->cert_pem, issued->key_pem}, client_options("x")));
  // A CA certificate with someone else's key is refused.
  auto mixed = pki::sign_csr(*pki::create_csr(*pki::generate_key_pem(), "x"),
                             pki::CertPem{ca.cert_pem, other.key_pem}, client_options("x"));
  REQUIRE_FALSE(mixed);
  CHECK(mixed.error().message.find("does not match") != std::string::npos);
}

TEST_CASE("PKI refuses a CSR whose CN differs from the requested one", "[cluster][pki]") {
  const auto ca = make_ca();
  auto csr = pki::create_csr(*pki::generate_key_pem(), "node-1");
  REQUIRE(csr);
  auto cert = pki::sign_csr(*csr, ca, client_options("controller"));
  REQUIRE_FALSE(cert);
  CHECK(cert.error().code == neco::Errc::invalid_argument);
  CHECK(cert.error().message.find("\"node-1\"") != std::string::npos);
  CHECK(cert.error().message.find("\"controller\"") != std::string::npos);
}

TEST_CASE("PKI refuses garbage, truncated and empty CSRs", "[cluster][pki]") {
  const auto ca = make_ca();
  auto csr = pki::create_csr(*pki::generate_key_pem(), "node-1");
  REQUIRE(csr);
  const std::string& good = *csr;
  const auto body_start = good.find('\n') + 1;
  std::string flipped = good;  // a changed byte inside the signed data: signature fails
  flipped[body_start + 40] = flipped[body_start + 40] == 'A' ? 'B' : 'A';
  for (const std::string& bad :
       {std::string(), std::string("garbage"), std::string("\0\1\2", 3),
        good.substr(0, good.size() / 2), good.substr(0, good.size() - 30),
        std::string(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
        ca.cert_pem, flipped}) {
    INFO(bad);
    auto info = pki::inspect_csr(bad);
    REQUIRE_FALSE(info);
    CHECK(info.error().code == neco::Errc::invalid_argument);
    CHECK(info.error().message.starts_with("Invalid CSR: "));
    CHECK_FALSE(pki::sign_csr(bad, ca, client_options("node-1")));
  }
  CHECK(pki::inspect_csr("").error().message == "Invalid CSR: empty");
  // OpenSSL's own reason is part of the message.
  CHECK(pki::inspect_csr("garbage").error().message.find("no start line") != std::string::npos);
  CHECK(pki::inspect_csr(good));  // the queue of errors above left nothing behind
}

TEST_CASE("PKI refuses weak or unsupported keys", "[cluster][pki]") {
  neco::testing::TempDir dir;
  struct Case {
    const char* genkey;
    bool accepted;
  };
  for (const auto& c : {Case{"genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024", false},
                        Case{"genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048", true},
                        Case{"genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384", false},
                        Case{"genpkey -algorithm ED25519", false}}) {
    INFO(c.genkey);
    const auto key_file = dir.file("key.pem");
    const auto csr_file = dir.file("csr.pem");
    run(fmt::format("openssl {} -out {} 2>/dev/null", c.genkey, key_file));
    run(fmt::format("openssl req -new -key {} -subj /CN=node-1 -out {}", key_file, csr_file));
    const auto csr = run(fmt::format("cat {}", csr_file));
    auto info = pki::inspect_csr(csr);
    CHECK(static_cast<bool>(info) == c.accepted);
    if (!info) CHECK(info.error().message.find("Unsupported key") != std::string::npos);
  }
}

TEST_CASE("PKI checks validity periods", "[cluster][pki]") {
  const auto ca = make_ca();
  auto options = client_options("old-node");
  options.not_before = SysClock::now() - 48h;
  options.validity = 24h;  // ended a day ago
  auto expired = pki::issue_key_and_cert(ca, options);
  REQUIRE(expired);
  auto v = pki::verify_cert(expired->cert_pem, ca.cert_pem);
  REQUIRE_FALSE(v);
  CHECK(v.error().message.find("certificate has expired") != std::string::npos);

  options.not_before = SysClock::now() + 1h;  // not yet valid
  auto future = pki::issue_key_and_cert(ca, options);
  REQUIRE(future);
  v = pki::verify_cert(future->cert_pem, ca.cert_pem);
  REQUIRE_FALSE(v);
  CHECK(v.error().message.find("not yet valid") != std::string::npos);

  options.not_before.reset();
  options.validity = 0s;
  CHECK_FALSE(pki::issue_key_and_cert(ca, options));
  options.validity = -1s;
  CHECK_FALSE(pki::issue_key_and_cert(ca, options));
  CHECK_FALSE(pki::create_ca("ca", 0s));
}

TEST_CASE("PKI refuses bad names and options", "[cluster][pki]") {
  const auto ca = make_ca();
  auto o = client_options("node");
  o.ip_addresses = {"10.0.0.300"};
  CHECK(pki::issue_key_and_cert(ca, o).error().code == neco::Errc::invalid_argument);
  o.ip_addresses.clear();
  o.dns_names = {"bad name"};
  CHECK_FALSE(pki::issue_key_and_cert(ca, o));
  o.dns_names.clear();
  o.client = false;
  CHECK_FALSE(pki::issue_key_and_cert(ca, o));
  CHECK_FALSE(pki::create_ca("", 1h));
  CHECK_FALSE(pki::create_ca(std::string(65, 'x'), 1h));
  CHECK_FALSE(pki::create_csr("not a key", "node"));
  CHECK_FALSE(pki::inspect_cert("not a cert"));
  CHECK_FALSE(pki::verify_cert("not a cert", ca.cert_pem));
  CHECK_FALSE(pki::verify_cert(ca.cert_pem, ""));
}

TEST_CASE("PKI fingerprints match the openssl CLI", "[cluster][pki]") {
  const auto ca = make_ca();
  auto fp = pki::cert_fingerprint(ca.cert_pem);
  REQUIRE(fp);
  CHECK(*fp == pki::cert_fingerprint(ca.cert_pem).value());  // stable
  CHECK(*fp == pki::inspect_cert(ca.cert_pem)->fingerprint);
  CHECK(fp->size() == 7 + 64);

  neco::testing::TempDir dir;
  neco::testing::write_file(dir / "ca.pem", ca.cert_pem);
  auto out = run("openssl x509 -noout -fingerprint -sha256 -in " + dir.file("ca.pem"));
  const auto eq = out.find('=');
  REQUIRE(eq != std::string::npos);
  std::string hex;
  for (const char c : out.substr(eq + 1)) {
    if (std::isxdigit(static_cast<unsigned char>(c))) {
      hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  CHECK(*fp == "sha256:" + hex);
  CHECK(*pki::cert_fingerprint(make_ca().cert_pem) != *fp);
}

TEST_CASE("PKI writes private files atomically with mode 0600", "[cluster][pki]") {
  neco::testing::TempDir dir;
  const auto path = dir.file("node.key");
  const auto key = pki::generate_key_pem();
  REQUIRE(key);
  REQUIRE(pki::write_private_file(path, *key));
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(run("cat " + path) == *key);

  // Replacing keeps the mode and leaves no temp file behind.
  REQUIRE(pki::write_private_file(path, "second"));
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(run("cat " + path) == "second");
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()),
                      std::filesystem::directory_iterator()) == 1);

  auto missing = pki::write_private_file(dir.file("no/such/dir/key"), "x");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == neco::Errc::unavailable);
}
