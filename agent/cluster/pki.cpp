#include "agent/cluster/pki.hpp"
#include "agent/util/openssl_errors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <array>
#include <cerrno>
#include <climits>
#include <ctime>
#include <filesystem>
#include <memory>
#include <system_error>
#include <utility>

namespace neco::cluster {
namespace {

using namespace std::chrono_literals;
using SysClock = std::chrono::system_clock;

// Certificates start 5 minutes in the past so a peer whose clock lags a little accepts them.
constexpr auto kClockSkew = 5min;

template <auto Free>
struct Deleter {
  template <class T>
  void operator()(T* p) const {
    Free(p);
  }
};
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ_free>>;
using NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
using Asn1IntPtr = std::unique_ptr<ASN1_INTEGER, Deleter<ASN1_INTEGER_free>>;
using Ia5Ptr = std::unique_ptr<ASN1_IA5STRING, Deleter<ASN1_IA5STRING_free>>;
using OctetPtr = std::unique_ptr<ASN1_OCTET_STRING, Deleter<ASN1_OCTET_STRING_free>>;
using GenNamePtr = std::unique_ptr<GENERAL_NAME, Deleter<GENERAL_NAME_free>>;
using GenNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX_free>>;

// Every public function starts and ends with an empty OpenSSL error queue, so one call's
// leftovers never end up in the next call's message (the queue is per thread).
struct ErrorQueueGuard {
  ErrorQueueGuard() { ERR_clear_error(); }
  ~ErrorQueueGuard() { ERR_clear_error(); }
  ErrorQueueGuard(const ErrorQueueGuard&) = delete;
  ErrorQueueGuard& operator=(const ErrorQueueGuard&) = delete;
};

// fail() with OpenSSL's queued reasons appended.
std::unexpected<Error> ssl_fail(Errc code, std::string message) {
  const auto detail = drain_openssl_errors();
  if (!detail.empty()) message += ": " + detail;
  return fail(code, std::move(message));
}

std::string in_quotes(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

// Never prompt on a terminal for the passphrase of an encrypted key: refuse it.
int no_passphrase(char*, int, int, void*) {
  return -1;
}

Expected<BioPtr> read_bio(std::string_view text) {
  if (text.size() > static_cast<std::size_t>(INT_MAX)) {
    return fail(Errc::invalid_argument, "PEM input is too large");
  }
  BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) return ssl_fail(Errc::internal, "Failed to allocate a BIO");
  return bio;
}

// Runs `write(BIO*)` into a memory BIO and returns what it wrote.
template <class Write>
Expected<std::string> write_pem(Write&& write, std::string_view what) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return ssl_fail(Errc::internal, "Failed to allocate a BIO");
  if (std::forward<Write>(write)(bio.get()) != 1) {
    return ssl_fail(Errc::internal, "Failed to encode the " + std::string(what) + " as PEM");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  if (n <= 0 || data == nullptr) {
    return ssl_fail(Errc::internal, "Failed to encode the " + std::string(what) + " as PEM");
  }
  return std::string(data, static_cast<std::size_t>(n));
}

Expected<X509Ptr> load_cert(std::string_view pem, std::string_view what) {
  if (pem.empty()) return fail(Errc::invalid_argument, "Invalid " + std::string(what) + ": empty");
  auto bio = read_bio(pem);
  if (!bio) return std::unexpected(bio.error());
  X509Ptr cert(PEM_read_bio_X509(bio->get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return ssl_fail(Errc::invalid_argument,
                    "Invalid " + std::string(what) + ": not a PEM X.509 certificate");
  }
  return cert;
}

Expected<PkeyPtr> load_key(std::string_view pem, std::string_view what) {
  if (pem.empty()) return fail(Errc::invalid_argument, "Invalid " + std::string(what) + ": empty");
  auto bio = read_bio(pem);
  if (!bio) return std::unexpected(bio.error());
  PkeyPtr key(PEM_read_bio_PrivateKey(bio->get(), nullptr, no_passphrase, nullptr));
  if (!key) {
    return ssl_fail(Errc::invalid_argument,
                    "Invalid " + std::string(what) + ": not an unencrypted PEM private key");
  }
  return key;
}

// Keys we accept from members: EC P-256 or RSA of at least 2048 bits.
Expected<void> check_key_policy(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "EC") == 1) {
    std::array<char, 64> group{};
    std::size_t len = 0;
    if (EVP_PKEY_get_group_name(key, group.data(), group.size(), &len) != 1) {
      return ssl_fail(Errc::invalid_argument, "Unsupported key: EC key without a named curve");
    }
    const std::string_view name(group.data(), len);
    if (name != "prime256v1" && name != "P-256") {
      return fail(Errc::invalid_argument,
                  "Unsupported key: EC curve " + in_quotes(name) + " (only P-256 is accepted)");
    }
    return {};
  }
  if (EVP_PKEY_is_a(key, "RSA") == 1) {
    const int bits = EVP_PKEY_get_bits(key);
    if (bits < 2048) {
      return fail(Errc::invalid_argument, "Unsupported key: RSA with " + std::to_string(bits) +
                                              " bits (at least 2048 are required)");
    }
    return {};
  }
  const char* type = EVP_PKEY_get0_type_name(key);
  return fail(Errc::invalid_argument, "Unsupported key type " +
                                          in_quotes(type != nullptr ? type : "?") +
                                          " (only EC P-256 and RSA >= 2048 are accepted)");
}

Expected<PkeyPtr> new_ec_key() {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_group_name(ctx.get(), "P-256") != 1 ||
      EVP_PKEY_generate(ctx.get(), &raw) != 1) {
    return ssl_fail(Errc::internal, "Failed to generate an EC P-256 key");
  }
  return PkeyPtr(raw);
}

Expected<std::string> key_to_pem(EVP_PKEY* key) {
  return write_pem(
      [key](BIO* bio) {
        return PEM_write_bio_PKCS8PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
      },
      "private key");
}

Expected<std::string> cert_to_pem(X509* cert) {
  return write_pem([cert](BIO* bio) { return PEM_write_bio_X509(bio, cert); }, "certificate");
}

// A CN we are willing to put into a certificate: 1..64 bytes (the X.520 bound), no controls.
Expected<void> check_common_name(std::string_view cn) {
  if (cn.empty()) return fail(Errc::invalid_argument, "The common name is empty");
  if (cn.size() > 64) {
    return fail(Errc::invalid_argument, "The common name " + in_quotes(cn) + " exceeds 64 bytes");
  }
  for (const char c : cn) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return fail(Errc::invalid_argument, "The common name contains a control character");
    }
  }
  return {};
}

Expected<NamePtr> make_name(std::string_view cn) {
  NamePtr name(X509_NAME_new());
  if (!name || X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                                          reinterpret_cast<const unsigned char*>(cn.data()),
                                          static_cast<int>(cn.size()), -1, 0) != 1) {
    return ssl_fail(Errc::invalid_argument, "Failed to build the subject CN=" + in_quotes(cn));
  }
  return name;
}

// The CN of a name; nullopt when there is more than one or it is not valid text.
std::optional<std::string> common_name_of(const X509_NAME* name) {
  const int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return std::string();
  if (X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0) return std::nullopt;
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return std::nullopt;
  std::string cn(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(n));
  OPENSSL_free(utf8);
  if (cn.find('\0') != std::string::npos) return std::nullopt;
  return cn;
}

Expected<void> set_random_serial(X509* cert) {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    return ssl_fail(Errc::internal, "Failed to generate a serial number");
  }
  bytes[0] &= 0x7f;   // serials are positive; 16 bytes stay well within RFC 5280's 20 octets
  bytes[15] |= 0x01;  // and never zero
  BnPtr bn(BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr));
  Asn1IntPtr serial(bn ? BN_to_ASN1_INTEGER(bn.get(), nullptr) : nullptr);
  if (!serial || X509_set_serialNumber(cert, serial.get()) != 1) {
    return ssl_fail(Errc::internal, "Failed to set the serial number");
  }
  return {};
}

Expected<void> set_validity(X509* cert, SysClock::time_point not_before,
                            SysClock::time_point not_after) {
  if (ASN1_TIME_set(X509_getm_notBefore(cert), SysClock::to_time_t(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert), SysClock::to_time_t(not_after)) == nullptr) {
    return ssl_fail(Errc::invalid_argument, "Failed to set the validity period");
  }
  return {};
}

Expected<void> add_ext(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return ssl_fail(Errc::internal, std::string("Failed to add the ") + OBJ_nid2sn(nid) +
                                        " extension \"" + value + "\"");
  }
  return {};
}

// Hostnames (and "*.example" wildcards): letters, digits, '-', '_', '.', '*'.
bool plausible_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '*';
    if (!ok) return false;
  }
  return true;
}

Expected<void> add_subject_alt_names(X509* cert, const IssueOptions& options) {
  if (options.dns_names.empty() && options.ip_addresses.empty()) return {};
  GenNamesPtr names(sk_GENERAL_NAME_new_null());
  if (!names) return ssl_fail(Errc::internal, "Failed to allocate subjectAltName");
  // Hands `gn` (and what it holds) over to `names`; frees it if that fails.
  auto push = [&](GenNamePtr gn) -> bool {
    GENERAL_NAME* raw = gn.release();
    if (sk_GENERAL_NAME_push(names.get(), raw) > 0) return true;
    GENERAL_NAME_free(raw);
    return false;
  };
  for (const auto& dns : options.dns_names) {
    if (!plausible_dns_name(dns)) {
      return fail(Errc::invalid_argument, "Bad DNS name " + in_quotes(dns) + " for subjectAltName");
    }
    GenNamePtr gn(GENERAL_NAME_new());
    Ia5Ptr str(ASN1_IA5STRING_new());
    if (!gn || !str || ASN1_STRING_set(str.get(), dns.data(), static_cast<int>(dns.size())) != 1) {
      return ssl_fail(Errc::internal, "Failed to encode DNS name " + in_quotes(dns));
    }
    GENERAL_NAME_set0_value(gn.get(), GEN_DNS, str.release());  // `gn` owns the string now
    if (!push(std::move(gn))) {
      return ssl_fail(Errc::internal, "Failed to add DNS name " + in_quotes(dns));
    }
  }
  for (const auto& ip : options.ip_addresses) {
    OctetPtr octets(a2i_IPADDRESS(ip.c_str()));
    if (!octets || ip.find('\0') != std::string::npos) {
      ERR_clear_error();
      return fail(Errc::invalid_argument,
                  "Bad IP address " + in_quotes(ip) + " for subjectAltName");
    }
    GenNamePtr gn(GENERAL_NAME_new());
    if (!gn) return ssl_fail(Errc::internal, "Failed to encode IP address " + in_quotes(ip));
    GENERAL_NAME_set0_value(gn.get(), GEN_IPADD, octets.release());
    if (!push(std::move(gn))) {
      return ssl_fail(Errc::internal, "Failed to add IP address " + in_quotes(ip));
    }
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return ssl_fail(Errc::internal, "Failed to add the subjectAltName extension");
  }
  return {};
}

Expected<CsrInfo> check_csr(X509_REQ* req) {
  EVP_PKEY* key = X509_REQ_get0_pubkey(req);
  if (key == nullptr) return ssl_fail(Errc::invalid_argument, "Invalid CSR: no usable public key");
  if (auto ok = check_key_policy(key); !ok) {
    return fail(Errc::invalid_argument, "Invalid CSR: " + ok.error().message);
  }
  if (X509_REQ_verify(req, key) != 1) {
    return ssl_fail(Errc::invalid_argument, "Invalid CSR: its signature does not verify");
  }
  auto cn = common_name_of(X509_REQ_get_subject_name(req));
  if (!cn) {
    return fail(Errc::invalid_argument, "Invalid CSR: the subject has several or unreadable CNs");
  }
  return CsrInfo{std::move(*cn)};
}

Expected<ReqPtr> load_csr(std::string_view pem) {
  if (pem.empty()) return fail(Errc::invalid_argument, "Invalid CSR: empty");
  auto bio = read_bio(pem);
  if (!bio) return std::unexpected(bio.error());
  ReqPtr req(PEM_read_bio_X509_REQ(bio->get(), nullptr, nullptr, nullptr));
  if (!req) {
    return ssl_fail(Errc::invalid_argument, "Invalid CSR: not a PEM certificate signing request");
  }
  return req;
}

Expected<SysClock::time_point> to_time_point(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return ssl_fail(Errc::invalid_argument, "Bad certificate time");
  return SysClock::from_time_t(::timegm(&tm));
}

Expected<std::string> fingerprint_of(const X509* cert) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md.data(), &len) != 1) {
    return ssl_fail(Errc::internal, "Failed to compute the certificate fingerprint");
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 0xf];
  }
  return out;
}

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

// write() all of `data`, retrying on EINTR and short writes; 0 or an errno.
int write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const auto n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return 0;
}

}  // namespace

Expected<std::string> generate_key_pem() {
  const ErrorQueueGuard guard;
  auto key = new_ec_key();
  if (!key) return std::unexpected(key.error());
  return key_to_pem(key->get());
}

Expected<CertPem> create_ca(std::string_view common_name, std::chrono::seconds validity) {
  const ErrorQueueGuard guard;
  if (auto ok = check_common_name(common_name); !ok) return std::unexpected(ok.error());
  if (validity <= 0s) return fail(Errc::invalid_argument, "The CA validity must be positive");
  auto key = new_ec_key();
  if (!key) return std::unexpected(key.error());
  auto name = make_name(common_name);
  if (!name) return std::unexpected(name.error());

  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1 ||  // 2 means v3
      X509_set_subject_name(cert.get(), name->get()) != 1 ||
      X509_set_issuer_name(cert.get(), name->get()) != 1 ||
      X509_set_pubkey(cert.get(), key->get()) != 1) {
    return ssl_fail(Errc::internal, "Failed to build the CA certificate");
  }
  if (auto ok = set_random_serial(cert.get()); !ok) return std::unexpected(ok.error());
  const auto now = SysClock::now();
  if (auto ok = set_validity(cert.get(), now - kClockSkew, now + validity); !ok) {
    return std::unexpected(ok.error());
  }
  X509V3_CTX ctx{};
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                                   std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                                   std::pair{NID_subject_key_identifier, "hash"}}) {
    if (auto ok = add_ext(cert.get(), &ctx, nid, value); !ok) return std::unexpected(ok.error());
  }
  if (X509_sign(cert.get(), key->get(), EVP_sha256()) <= 0) {
    return ssl_fail(Errc::internal, "Failed to sign the CA certificate");
  }
  auto cert_pem = cert_to_pem(cert.get());
  if (!cert_pem) return std::unexpected(cert_pem.error());
  auto key_pem = key_to_pem(key->get());
  if (!key_pem) return std::unexpected(key_pem.error());
  return CertPem{std::move(*cert_pem), std::move(*key_pem)};
}

Expected<std::string> create_csr(std::string_view key_pem, std::string_view common_name) {
  const ErrorQueueGuard guard;
  if (auto ok = check_common_name(common_name); !ok) return std::unexpected(ok.error());
  auto key = load_key(key_pem, "private key");
  if (!key) return std::unexpected(key.error());
  if (auto ok = check_key_policy(key->get()); !ok) return std::unexpected(ok.error());
  auto name = make_name(common_name);
  if (!name) return std::unexpected(name.error());
  ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), 0) != 1 ||  // 0 means v1, the only version
      X509_REQ_set_subject_name(req.get(), name->get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), key->get()) != 1 ||
      X509_REQ_sign(req.get(), key->get(), EVP_sha256()) <= 0) {
    return ssl_fail(Errc::internal, "Failed to build the CSR");
  }
  return write_pem([&req](BIO* bio) { return PEM_write_bio_X509_REQ(bio, req.get()); }, "CSR");
}

Expected<CsrInfo> inspect_csr(std::string_view csr_pem) {
  const ErrorQueueGuard guard;
  auto req = load_csr(csr_pem);
  if (!req) return std::unexpected(req.error());
  return check_csr(req->get());
}

Expected<std::string> sign_csr(std::string_view csr_pem, const CertPem& ca,
                               const IssueOptions& options) {
  const ErrorQueueGuard guard;
  if (auto ok = check_common_name(options.common_name); !ok) return std::unexpected(ok.error());
  if (options.validity <= 0s) {
    return fail(Errc::invalid_argument, "The certificate validity must be positive");
  }
  if (!options.server && !options.client) {
    return fail(Errc::invalid_argument, "A certificate must be for server or client use (or both)");
  }
  auto req = load_csr(csr_pem);
  if (!req) return std::unexpected(req.error());
  auto info = check_csr(req->get());
  if (!info) return std::unexpected(info.error());
  if (info->common_name != options.common_name) {
    return fail(Errc::invalid_argument, "The CSR's common name " + in_quotes(info->common_name) +
                                            " differs from the requested " +
                                            in_quotes(options.common_name));
  }
  auto ca_cert = load_cert(ca.cert_pem, "CA certificate");
  if (!ca_cert) return std::unexpected(ca_cert.error());
  auto ca_key = load_key(ca.key_pem, "CA key");
  if (!ca_key) return std::unexpected(ca_key.error());
  if (X509_check_ca(ca_cert->get()) != 1) {
    return fail(Errc::invalid_argument, "The CA certificate is not a CA (no CA:TRUE)");
  }
  if (X509_check_private_key(ca_cert->get(), ca_key->get()) != 1) {
    return ssl_fail(Errc::invalid_argument, "The CA key does not match the CA certificate");
  }
  auto subject = make_name(options.common_name);
  if (!subject) return std::unexpected(subject.error());

  // Only the public key comes from the CSR; extensions it may request are ignored.
  EVP_PKEY* pubkey = X509_REQ_get0_pubkey(req->get());
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1 ||
      X509_set_subject_name(cert.get(), subject->get()) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert->get())) != 1 ||
      X509_set_pubkey(cert.get(), pubkey) != 1) {
    return ssl_fail(Errc::internal, "Failed to build the certificate");
  }
  if (auto ok = set_random_serial(cert.get()); !ok) return std::unexpected(ok.error());
  const auto not_before = options.not_before.value_or(SysClock::now() - kClockSkew);
  const auto not_after = options.not_before ? *options.not_before + options.validity
                                            : SysClock::now() + options.validity;
  if (auto ok = set_validity(cert.get(), not_before, not_after); !ok) {
    return std::unexpected(ok.error());
  }

  const char* eku = options.server && options.client ? "serverAuth,clientAuth"
                    : options.server                 ? "serverAuth"
                                                     : "clientAuth";
  // RSA key exchange (TLS 1.2 without ECDHE) needs keyEncipherment; EC keys never do.
  const char* key_usage = EVP_PKEY_is_a(pubkey, "RSA") == 1
                              ? "critical,digitalSignature,keyEncipherment"
                              : "critical,digitalSignature";
  X509V3_CTX ctx{};
  X509V3_set_ctx(&ctx, ca_cert->get(), cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] :
       {std::pair{NID_basic_constraints, "critical,CA:FALSE"}, std::pair{NID_key_usage, key_usage},
        std::pair{NID_ext_key_usage, eku}, std::pair{NID_subject_key_identifier, "hash"},
        std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (auto ok = add_ext(cert.get(), &ctx, nid, value); !ok) return std::unexpected(ok.error());
  }
  if (auto ok = add_subject_alt_names(cert.get(), options); !ok) {
    return std::unexpected(ok.error());
  }
  if (X509_sign(cert.get(), ca_key->get(), EVP_sha256()) <= 0) {
    return ssl_fail(Errc::internal, "Failed to sign the certificate");
  }
  return cert_to_pem(cert.get());
}

Expected<CertPem> issue_key_and_cert(const CertPem& ca, const IssueOptions& options) {
  auto key = generate_key_pem();
  if (!key) return std::unexpected(key.error());
  auto csr = create_csr(*key, options.common_name);
  if (!csr) return std::unexpected(csr.error());
  auto cert = sign_csr(*csr, ca, options);
  if (!cert) return std::unexpected(cert.error());
  return CertPem{std::move(*cert), std::move(*key)};
}

Expected<CertInfo> inspect_cert(std::string_view cert_pem) {
  const ErrorQueueGuard guard;
  auto cert = load_cert(cert_pem, "certificate");
  if (!cert) return std::unexpected(cert.error());
  CertInfo info;
  auto cn = common_name_of(X509_get_subject_name(cert->get()));
  if (!cn) return fail(Errc::invalid_argument, "The certificate has several or unreadable CNs");
  info.common_name = std::move(*cn);
  auto fp = fingerprint_of(cert->get());
  if (!fp) return std::unexpected(fp.error());
  info.fingerprint = std::move(*fp);
  auto nb = to_time_point(X509_get0_notBefore(cert->get()));
  if (!nb) return std::unexpected(nb.error());
  auto na = to_time_point(X509_get0_notAfter(cert->get()));
  if (!na) return std::unexpected(na.error());
  info.not_before = *nb;
  info.not_after = *na;
  BnPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert->get()), nullptr));
  char* hex = serial ? BN_bn2hex(serial.get()) : nullptr;
  if (hex == nullptr) return ssl_fail(Errc::internal, "Failed to read the serial number");
  info.serial_hex = hex;
  OPENSSL_free(hex);
  for (auto& c : info.serial_hex)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  info.is_ca = (X509_get_extension_flags(cert->get()) & EXFLAG_CA) != 0;
  return info;
}

Expected<std::string> cert_fingerprint(std::string_view cert_pem) {
  const ErrorQueueGuard guard;
  auto cert = load_cert(cert_pem, "certificate");
  if (!cert) return std::unexpected(cert.error());
  return fingerprint_of(cert->get());
}

Expected<void> verify_cert(std::string_view cert_pem, std::string_view ca_pem) {
  const ErrorQueueGuard guard;
  auto cert = load_cert(cert_pem, "certificate");
  if (!cert) return std::unexpected(cert.error());
  auto ca = load_cert(ca_pem, "CA certificate");
  if (!ca) return std::unexpected(ca.error());
  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca->get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr) != 1) {
    return ssl_fail(Errc::internal, "Failed to set up certificate verification");
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    return fail(Errc::failed_precondition,
                std::string("The certificate does not verify against the CA: ") +
                    X509_verify_cert_error_string(err));
  }
  return {};
}

Expected<void> write_private_file(const std::string& path, std::string_view content) {
  namespace fs = std::filesystem;
  const ErrorQueueGuard guard;
  const fs::path target(path);
  if (target.filename().empty()) {
    return fail(Errc::invalid_argument, "Bad file path " + in_quotes(path));
  }
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");

  // O_EXCL with a random name: never reuse (or follow a link planted at) someone else's file.
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
    std::array<unsigned char, 8> rnd{};
    if (RAND_bytes(rnd.data(), static_cast<int>(rnd.size())) != 1) {
      return ssl_fail(Errc::internal, "Failed to pick a temp file name");
    }
    std::string suffix;
    for (const auto b : rnd) {
      static constexpr char hex[] = "0123456789abcdef";
      suffix += hex[b >> 4];
      suffix += hex[b & 0xf];
    }
    tmp = (dir / ("." + target.filename().string() + ".tmp-" + suffix)).string();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno != EEXIST) {
      return fail(Errc::unavailable,
                  "Failed to create " + in_quotes(tmp) + ": " + errno_text(errno));
    }
  }
  if (fd < 0)
    return fail(Errc::unavailable, "Failed to create a temp file next to " + in_quotes(path));

  auto abandon = [&](std::string_view step, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return fail(Errc::unavailable,
                "Failed to " + std::string(step) + " " + in_quotes(path) + ": " + errno_text(err));
  };
  // The umask may have taken bits away; make it exactly 0600 (it could never have added any).
  if (::fchmod(fd, 0600) != 0) return abandon("chmod", errno);
  if (const int err = write_all(fd, content); err != 0) return abandon("write", err);
  if (::fsync(fd) != 0) return abandon("fsync", errno);
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) return abandon("close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return abandon("rename into", errno);

  // The rename is durable only once the directory entry is on disk.
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return fail(Errc::unavailable,
                "Failed to open the directory of " + in_quotes(path) + ": " + errno_text(errno));
  }
  const int synced = ::fsync(dir_fd);
  const int err = errno;
  ::close(dir_fd);
  if (synced != 0) {
    return fail(Errc::unavailable,
                "Failed to fsync the directory of " + in_quotes(path) + ": " + errno_text(err));
  }
  return {};
}

}  // namespace neco::cluster
