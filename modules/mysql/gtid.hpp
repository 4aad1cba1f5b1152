// MariaDB GTID positions and the comparisons failover needs. A position is what
// @@gtid_current_pos, @@gtid_binlog_pos, @@gtid_slave_pos and Gtid_IO_Pos print: one
// domain-server_id-seq_no triple per replication domain ("0-1-100,1-2-5"; "" is empty).
// MariaDB has no GTID_SUBSET, so containment, ordering, errant transactions and the choice of a
// failover candidate are computed here, purely, from positions the client read.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/util/error.hpp"

namespace neco::mysql {

// One GTID: the last transaction of a replication domain.
struct Gtid {
  std::uint32_t domain_id = 0;
  std::uint32_t server_id = 0;
  std::uint64_t seq_no = 0;

  friend bool operator==(const Gtid&, const Gtid&) = default;
};

// "domain-server-seq".
std::string to_string(const Gtid& gtid);

// A GTID position: at most one GTID per domain, kept sorted by domain_id.
class GtidPosition {
 public:
  GtidPosition() = default;
  // Builds a position from GTIDs; fails (invalid_argument) when a domain appears twice.
  static Expected<GtidPosition> from(std::vector<Gtid> gtids);

  // The GTIDs, sorted by domain_id.
  const std::vector<Gtid>& gtids() const { return gtids_; }
  bool empty() const { return gtids_.empty(); }
  // The GTID of a domain, or nullptr when the position has none for it.
  const Gtid* find(std::uint32_t domain_id) const;
  // The sequence number of a domain (0 when absent: nothing of it was seen).
  std::uint64_t seq_no(std::uint32_t domain_id) const;

  friend bool operator==(const GtidPosition&, const GtidPosition&) = default;

 private:
  std::vector<Gtid> gtids_;
};

// Parses a position as MariaDB prints it: comma-separated domain-server-seq triples, ASCII
// whitespace allowed around each triple (MariaDB breaks long lists over lines), "" is empty.
// Errors (invalid_argument) name the offending triple: missing or non-decimal numbers, values
// over range (domain and server_id are 32-bit, seq_no 64-bit), empty items, duplicate domains.
Expected<GtidPosition> parse_gtid_position(std::string_view text);

// Canonical text: triples sorted by domain, comma-separated, no spaces ("" when empty).
std::string to_string(const GtidPosition& position);

// True when `a` has seen everything `b` has: every domain of `b` is in `a` with a sequence
// number at least as high. Server ids are not compared (divergence is errant()'s question).
bool contains(const GtidPosition& a, const GtidPosition& b);

// The partial order of contains(): equivalent when each contains the other (same seq_no per
// domain), greater when `a` strictly contains `b`, unordered when each has something the other
// lacks (possible with several domains).
std::partial_ordering compare(const GtidPosition& a, const GtidPosition& b);

// True when `a` strictly contains `b`.
bool ahead_of(const GtidPosition& a, const GtidPosition& b);

// Each domain at the higher sequence number of the two (the GTID comes from the side that has
// it; on equal seq_no, from `a`).
GtidPosition merge_max(const GtidPosition& a, const GtidPosition& b);

// A transaction a replica has that its primary lacks.
struct ErrantGtid {
  enum class Reason {
    unknown_domain,  // the primary has never written in this domain
    ahead,           // the replica's seq_no is beyond the primary's
    diverged,        // same seq_no, different server_id: different transactions
  };
  Reason reason = Reason::ahead;
  Gtid replica;                 // the replica's GTID of the domain
  std::optional<Gtid> primary;  // the primary's, when it has the domain

  friend bool operator==(const ErrantGtid&, const ErrantGtid&) = default;
};

// Stable lower_snake name of a reason.
std::string_view to_string(ErrantGtid::Reason reason);

// The errant GTIDs of `replica` against `primary`, one per domain, sorted by domain; empty
// when none. Read the replica's position before the primary's: the primary only moves forward,
// so a later primary position never makes a healthy replica look errant. A replica behind in a
// domain is not errant (it may diverge inside the range it has not applied yet; positions alone
// cannot tell).
std::vector<ErrantGtid> errant(const GtidPosition& replica, const GtidPosition& primary);

// Human-readable list for logs and the API: "1-2-5 (ahead of primary 1-1-4), 3-2-1 (unknown
// domain)"; "" when empty.
std::string describe(const std::vector<ErrantGtid>& errant);

// What the leader knows of a replica when choosing whom to promote.
struct CandidateInfo {
  std::string name;
  GtidPosition io_pos;       // Gtid_IO_Pos: what it received
  GtidPosition current_pos;  // @@gtid_current_pos: what it applied
  bool errant = false;       // it has transactions the primary lacked
  bool reachable = true;     // its status could be read just now
};

// Picks the replica to promote: never an unreachable or errant one; the one whose received
// position (Gtid_IO_Pos merged with gtid_current_pos, since anything applied was received)
// contains every other eligible replica's, then among equals the one that applied most (by
// gtid_current_pos containment), then the smallest name. Fails (failed_precondition) when no
// replica is eligible, or when no eligible replica received everything the others did (two
// replicas each ahead in a different domain): promoting either would lose transactions. The
// message says why each replica was excluded or which transactions the best lacks.
Expected<std::string> choose_candidate(const std::vector<CandidateInfo>& replicas);

}  // namespace neco::mysql
