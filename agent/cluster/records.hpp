// Where the cluster keeps its state in the store, and the pure rules on it: join tokens and the
// membership decision. Pure so unit tests cover them without a cluster.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "agent/util/error.hpp"

namespace neco::cluster {

// The store layout. Everything under one prefix, one key per fact, so that heartbeats (status)
// never rewrite what the leader decides (state) or what joining fixed (member).
namespace keys {
inline constexpr std::string_view kRoot = "/neco/cluster/";
inline constexpr std::string_view kCaCert = "/neco/cluster/ca/cert";
inline constexpr std::string_view kCaKey = "/neco/cluster/ca/key";
inline constexpr std::string_view kCaFingerprint = "/neco/cluster/ca/fingerprint";
inline constexpr std::string_view kTokens = "/neco/cluster/tokens/";    // + id: a join token
inline constexpr std::string_view kMembers = "/neco/cluster/members/";  // + name: identity (join)
inline constexpr std::string_view kStatus = "/neco/cluster/status/";    // + name: last heartbeat
inline constexpr std::string_view kState = "/neco/cluster/state/";      // + name: leader's verdict
inline constexpr std::string_view kDesired = "/neco/cluster/desired/";  // + name: what it should do

// The key of `name` under one of the prefixes above.
inline std::string at(std::string_view prefix, std::string_view name) {
  std::string k(prefix);
  k += name;
  return k;
}
}  // namespace keys

// A join token as printed: "<id>.<secret>", 8 + 32 lowercase hex digits. Only the SHA-256 of
// the secret is stored, so reading the store does not let anyone join.
struct JoinToken {
  std::string id;
  std::string secret;
  std::string text() const { return id + "." + secret; }
};

// A fresh random token.
Expected<JoinToken> make_token();
// Splits and checks the shape of a token; invalid_argument with a reason otherwise.
Expected<JoinToken> parse_token(std::string_view text);
// Lowercase hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);
// Equality that takes the same time wherever the strings differ.
bool constant_time_equal(std::string_view a, std::string_view b);

// The membership states the leader writes.
inline constexpr std::string_view kHealthy = "healthy";
inline constexpr std::string_view kUnreachable = "unreachable";

// What the leader remembers of one node's heartbeats, on its own monotonic clock, so skewed
// wall clocks on nodes or controllers never make a node look dead.
struct BeatTrack {
  std::int64_t status_revision = 0;               // mod_revision of the status key last seen
  std::chrono::steady_clock::time_point changed;  // when the leader saw it change
};

// The state a node should be in given its heartbeat track: unreachable once `missed` beats of
// `interval` went by without its status key changing.
std::string_view decide_state(const BeatTrack& track, std::chrono::steady_clock::time_point now,
                              std::chrono::milliseconds interval, std::int64_t missed);

// Seconds since the epoch, for records.
std::int64_t unix_now();

}  // namespace neco::cluster
