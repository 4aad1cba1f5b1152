// The cluster's private PKI: a CA that the controllers hold, keys and CSRs that members make,
// certificates the CA signs, and the checks on all of them. Everything travels as PEM strings;
// OpenSSL stays inside pki.cpp.
//
// Error codes: malformed or unacceptable input (garbage PEM, weak keys, a CN that does not match)
// is Errc::invalid_argument; a certificate that parses but does not verify is
// Errc::failed_precondition; file system trouble is Errc::unavailable; an unexpected OpenSSL
// failure is Errc::internal. Messages carry OpenSSL's own error text where it has one.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/util/error.hpp"

namespace neco::cluster {

// A certificate and its private key, both PEM (the key as unencrypted PKCS#8).
struct CertPem {
  std::string cert_pem;
  std::string key_pem;
};

// What a CSR asks for, once its self-signature has been checked.
struct CsrInfo {
  std::string common_name;  // subject CN (empty when the CSR has none)
};

// What the CA puts into a certificate it issues.
struct IssueOptions {
  std::string common_name;                // subject CN; a CSR's CN must equal it
  std::vector<std::string> dns_names;     // subjectAltName DNS entries
  std::vector<std::string> ip_addresses;  // subjectAltName IP entries ("10.0.0.1", "::1")
  bool server = false;                    // extendedKeyUsage serverAuth
  bool client = true;                     // extendedKeyUsage clientAuth
  std::chrono::seconds validity{0};       // lifetime from now; must be positive
  // Tests only: fixes notBefore (notAfter = not_before + validity) instead of now - 5 min, so a
  // test can make a certificate that has already expired.
  std::optional<std::chrono::system_clock::time_point> not_before;
};

// What inspect_cert() reads from a certificate.
struct CertInfo {
  std::string common_name;  // subject CN (empty when none)
  std::string fingerprint;  // see cert_fingerprint()
  std::chrono::system_clock::time_point not_before, not_after;
  std::string serial_hex;  // lowercase hex, no leading zeros
  bool is_ca = false;      // basicConstraints CA:TRUE
};

// A fresh EC P-256 private key as unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY").
Expected<std::string> generate_key_pem();

// A self-signed CA certificate (CA:TRUE critical, keyCertSign|cRLSign, SKI) and its new key,
// valid from 5 minutes ago for `validity`.
Expected<CertPem> create_ca(std::string_view common_name, std::chrono::seconds validity);

// A PEM certificate signing request for `key_pem` with subject CN=`common_name`.
Expected<std::string> create_csr(std::string_view key_pem, std::string_view common_name);

// Parses a PEM CSR, checks its self-signature and that its key is EC P-256 or RSA >= 2048 bits.
Expected<CsrInfo> inspect_csr(std::string_view csr_pem);

// Signs a CSR (checked as by inspect_csr()) with the CA: subject CN from `options` (the CSR's CN
// must be the same), SANs and EKUs from `options`, CA:FALSE, SKI/AKI, notBefore 5 minutes ago
// for clock skew, a random 128-bit serial. Returns the certificate as PEM.
Expected<std::string> sign_csr(std::string_view csr_pem, const CertPem& ca,
                               const IssueOptions& options);

// A new key and a certificate for it signed by `ca` (e.g. a controller's own server+client cert).
Expected<CertPem> issue_key_and_cert(const CertPem& ca, const IssueOptions& options);

// Reads the subject CN, fingerprint, validity, serial and CA flag of a PEM certificate.
Expected<CertInfo> inspect_cert(std::string_view cert_pem);

// "sha256:" + lowercase hex SHA-256 of the DER certificate, as `openssl x509 -fingerprint
// -sha256` prints it without colons.
Expected<std::string> cert_fingerprint(std::string_view cert_pem);

// Verifies `cert_pem` against exactly the CA `ca_pem` (the only trust anchor), including the
// validity periods of both. Errc::failed_precondition with OpenSSL's reason when it fails.
Expected<void> verify_cert(std::string_view cert_pem, std::string_view ca_pem);

// Writes `content` to `path` atomically with mode 0600: a temp file in the same directory
// created 0600 (never readable by others, not even briefly), fsync, rename, fsync of the dir.
Expected<void> write_private_file(const std::string& path, std::string_view content);

}  // namespace neco::cluster
