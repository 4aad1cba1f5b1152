// Streaming SHA-256 (OpenSSL EVP) for boot assets: the store hashes uploads and downloads chunk
// by chunk, and `neco assets upload` hashes the local file before sending it. Header-only so the
// CLI library and the asset library share it without linking each other.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <memory>
#include <string>
#include <string_view>

#include "agent/util/text.hpp"

namespace neco::netboot {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    ok_ = ctx_ != nullptr && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1;
  }
  // Adds bytes to the digest.
  void update(std::string_view data) {
    if (ok_ && !data.empty()) ok_ = EVP_DigestUpdate(ctx_.get(), data.data(), data.size()) == 1;
  }
  // Lowercase hex of the digest; empty when OpenSSL failed (callers treat that as a mismatch).
  std::string hex() {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    if (!ok_ || EVP_DigestFinal_ex(ctx_.get(), md.data(), &len) != 1) return {};
    ok_ = false;  // finalised: no further use
    return to_hex(std::string_view(reinterpret_cast<const char*>(md.data()), len));
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
  bool ok_ = false;
};

// Whether `s` looks like a SHA-256 in lowercase hex (64 digits).
inline bool is_sha256_hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace neco::netboot
