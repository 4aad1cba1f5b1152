#include "agent/cluster/records.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>

#include "agent/util/text.hpp"

namespace neco::cluster {
namespace {

bool is_hex(std::string_view s) {
  return s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

Expected<std::string> random_hex(std::size_t bytes) {
  std::array<unsigned char, 64> buf{};
  if (bytes > buf.size() || RAND_bytes(buf.data(), static_cast<int>(bytes)) != 1) {
    return fail(Errc::internal, "no random bytes from OpenSSL");
  }
  return to_hex({reinterpret_cast<const char*>(buf.data()), bytes});
}

}  // namespace

Expected<JoinToken> make_token() {
  auto id = random_hex(4);
  if (!id) return std::unexpected(id.error());
  auto secret = random_hex(16);
  if (!secret) return std::unexpected(secret.error());
  return JoinToken{*id, *secret};
}

Expected<JoinToken> parse_token(std::string_view text) {
  const auto dot = text.find('.');
  if (dot != 8 || text.size() != 8 + 1 + 32 || !is_hex(text.substr(0, 8)) ||
      !is_hex(text.substr(9))) {
    return fail(Errc::invalid_argument,
                "malformed join token: expected <8 hex>.<32 hex> as printed by "
                "'neco join-token create'");
  }
  return JoinToken{std::string(text.substr(0, 8)), std::string(text.substr(9))};
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr);
  return to_hex({reinterpret_cast<const char*>(md.data()), len});
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string_view decide_state(const BeatTrack& track, std::chrono::steady_clock::time_point now,
                              std::chrono::milliseconds interval, std::int64_t missed) {
  return now - track.changed > interval * missed ? kUnreachable : kHealthy;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace neco::cluster
