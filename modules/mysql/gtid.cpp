// MariaDB GTID positions: parsing, canonical text, containment, errant transactions and the
// failover candidate choice (see gtid.hpp).
#include "modules/mysql/gtid.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <system_error>

namespace neco::mysql {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return s;
}

// One decimal field of a triple: digits only, no sign, within T's range.
template <class T>
Expected<T> parse_field(std::string_view field, std::string_view what, std::string_view item) {
  if (field.empty()) {
    return fail(
        Errc::invalid_argument,
        fmt::format("GTID \"{}\": {} is empty (expected domain-server_id-seq_no)", item, what));
  }
  if (!std::all_of(field.begin(), field.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return fail(Errc::invalid_argument,
                fmt::format("GTID \"{}\": {} \"{}\" is not a decimal number", item, what, field));
  }
  T value{};
  const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), value);
  if (ec == std::errc::result_out_of_range) {
    return fail(Errc::invalid_argument,
                fmt::format("GTID \"{}\": {} {} is out of range (at most {})", item, what, field,
                            std::numeric_limits<T>::max()));
  }
  if (ec != std::errc{} || end != field.data() + field.size()) {
    return fail(Errc::invalid_argument,
                fmt::format("GTID \"{}\": {} \"{}\" is not a decimal number", item, what, field));
  }
  return value;
}

Expected<Gtid> parse_gtid(std::string_view item) {
  const auto first = item.find('-');
  const auto second = first == std::string_view::npos ? first : item.find('-', first + 1);
  if (second == std::string_view::npos || item.find('-', second + 1) != std::string_view::npos) {
    return fail(Errc::invalid_argument,
                fmt::format("GTID \"{}\": expected three numbers domain-server_id-seq_no", item));
  }
  auto domain = parse_field<std::uint32_t>(item.substr(0, first), "domain_id", item);
  if (!domain) return std::unexpected(domain.error());
  auto server =
      parse_field<std::uint32_t>(item.substr(first + 1, second - first - 1), "server_id", item);
  if (!server) return std::unexpected(server.error());
  auto seq = parse_field<std::uint64_t>(item.substr(second + 1), "seq_no", item);
  if (!seq) return std::unexpected(seq.error());
  return Gtid{*domain, *server, *seq};
}

}  // namespace

std::string to_string(const Gtid& gtid) {
  return fmt::format("{}-{}-{}", gtid.domain_id, gtid.server_id, gtid.seq_no);
}

Expected<GtidPosition> GtidPosition::from(std::vector<Gtid> gtids) {
  std::stable_sort(gtids.begin(), gtids.end(),
                   [](const Gtid& a, const Gtid& b) { return a.domain_id < b.domain_id; });
  for (std::size_t i = 1; i < gtids.size(); ++i) {
    if (gtids[i].domain_id == gtids[i - 1].domain_id) {
      return fail(Errc::invalid_argument,
                  fmt::format("GTID position has domain {} twice ({} and {})", gtids[i].domain_id,
                              to_string(gtids[i - 1]), to_string(gtids[i])));
    }
  }
  GtidPosition position;
  position.gtids_ = std::move(gtids);
  return position;
}

const Gtid* GtidPosition::find(std::uint32_t domain_id) const {
  const auto it = std::lower_bound(
      gtids_.begin(), gtids_.end(), domain_id,
      [](const Gtid& gtid, std::uint32_t domain) { return gtid.domain_id < domain; });
  return it != gtids_.end() && it->domain_id == domain_id ? &*it : nullptr;
}

std::uint64_t GtidPosition::seq_no(std::uint32_t domain_id) const {
  const Gtid* gtid = find(domain_id);
  return gtid == nullptr ? 0 : gtid->seq_no;
}

Expected<GtidPosition> parse_gtid_position(std::string_view text) {
  std::vector<Gtid> gtids;
  if (trim(text).empty()) return GtidPosition{};
  std::size_t index = 0;
  while (true) {
    const auto comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    ++index;
    if (item.empty()) {
      return fail(Errc::invalid_argument,
                  fmt::format("GTID position \"{}\": item {} is empty", trim(text), index));
    }
    auto gtid = parse_gtid(item);
    if (!gtid) return std::unexpected(gtid.error());
    gtids.push_back(*gtid);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return GtidPosition::from(std::move(gtids));
}

std::string to_string(const GtidPosition& position) {
  std::string out;
  for (const Gtid& gtid : position.gtids()) {
    if (!out.empty()) out += ',';
    out += to_string(gtid);
  }
  return out;
}

bool contains(const GtidPosition& a, const GtidPosition& b) {
  return std::all_of(b.gtids().begin(), b.gtids().end(),
                     [&](const Gtid& gtid) { return a.seq_no(gtid.domain_id) >= gtid.seq_no; });
}

std::partial_ordering compare(const GtidPosition& a, const GtidPosition& b) {
  const bool a_has_b = contains(a, b);
  const bool b_has_a = contains(b, a);
  if (a_has_b && b_has_a) return std::partial_ordering::equivalent;
  if (a_has_b) return std::partial_ordering::greater;
  if (b_has_a) return std::partial_ordering::less;
  return std::partial_ordering::unordered;
}

bool ahead_of(const GtidPosition& a, const GtidPosition& b) {
  return compare(a, b) == std::partial_ordering::greater;
}

GtidPosition merge_max(const GtidPosition& a, const GtidPosition& b) {
  std::vector<Gtid> merged = a.gtids();
  for (const Gtid& gtid : b.gtids()) {
    auto it = std::find_if(merged.begin(), merged.end(),
                           [&](const Gtid& m) { return m.domain_id == gtid.domain_id; });
    if (it == merged.end()) {
      merged.push_back(gtid);
    } else if (gtid.seq_no > it->seq_no) {
      *it = gtid;
    }
  }
  // Domains are unique by construction.
  return *GtidPosition::from(std::move(merged));
}

std::string_view to_string(ErrantGtid::Reason reason) {
  switch (reason) {
    case ErrantGtid::Reason::unknown_domain:
      return "unknown_domain";
    case ErrantGtid::Reason::ahead:
      return "ahead";
    case ErrantGtid::Reason::diverged:
      return "diverged";
  }
  return "unknown";
}

std::vector<ErrantGtid> errant(const GtidPosition& replica, const GtidPosition& primary) {
  std::vector<ErrantGtid> out;
  for (const Gtid& mine : replica.gtids()) {
    const Gtid* theirs = primary.find(mine.domain_id);
    if (theirs == nullptr) {
      // seq_no 0 is no transaction at all (MariaDB never prints it, but a caller may).
      if (mine.seq_no > 0) out.push_back({ErrantGtid::Reason::unknown_domain, mine, std::nullopt});
    } else if (mine.seq_no > theirs->seq_no) {
      out.push_back({ErrantGtid::Reason::ahead, mine, *theirs});
    } else if (mine.seq_no == theirs->seq_no && mine.server_id != theirs->server_id) {
      out.push_back({ErrantGtid::Reason::diverged, mine, *theirs});
    }
  }
  return out;
}

std::string describe(const std::vector<ErrantGtid>& errant) {
  std::string out;
  for (const ErrantGtid& e : errant) {
    if (!out.empty()) out += ", ";
    switch (e.reason) {
      case ErrantGtid::Reason::unknown_domain:
        out += fmt::format("{} (domain unknown to the primary)", to_string(e.replica));
        break;
      case ErrantGtid::Reason::ahead:
        out += fmt::format("{} (ahead of the primary's {})", to_string(e.replica),
                           to_string(*e.primary));
        break;
      case ErrantGtid::Reason::diverged:
        out += fmt::format("{} (diverged from the primary's {})", to_string(e.replica),
                           to_string(*e.primary));
        break;
    }
  }
  return out;
}

namespace {

// What `have` lacks of `want`: the GTIDs of `want` beyond `have`, as text.
std::string missing(const GtidPosition& have, const GtidPosition& want) {
  std::string out;
  for (const Gtid& gtid : want.gtids()) {
    if (have.seq_no(gtid.domain_id) >= gtid.seq_no) continue;
    if (!out.empty()) out += ',';
    out += to_string(gtid);
  }
  return out;
}

}  // namespace

Expected<std::string> choose_candidate(const std::vector<CandidateInfo>& replicas) {
  struct Eligible {
    const CandidateInfo* info;
    GtidPosition received;
  };
  std::vector<Eligible> eligible;
  std::vector<std::string> excluded;
  for (const CandidateInfo& replica : replicas) {
    if (!replica.reachable) {
      excluded.push_back(fmt::format("\"{}\" is unreachable", replica.name));
    } else if (replica.errant) {
      excluded.push_back(fmt::format("\"{}\" has errant transactions", replica.name));
    } else {
      eligible.push_back({&replica, merge_max(replica.io_pos, replica.current_pos)});
    }
  }
  if (eligible.empty()) {
    return fail(Errc::failed_precondition,
                excluded.empty()
                    ? std::string("no replica to promote: none known")
                    : fmt::format("no replica to promote: {}", fmt::join(excluded, "; ")));
  }
  // Name order first: every later choice takes the first match, so ties go to the smallest.
  std::sort(eligible.begin(), eligible.end(),
            [](const Eligible& a, const Eligible& b) { return a.info->name < b.info->name; });

  // Received everything any other eligible replica received.
  std::vector<const Eligible*> complete;
  for (const Eligible& e : eligible) {
    const bool has_all = std::all_of(eligible.begin(), eligible.end(), [&](const Eligible& o) {
      return contains(e.received, o.received);
    });
    if (has_all) complete.push_back(&e);
  }
  if (complete.empty()) {
    std::vector<std::string> lacks;
    for (const Eligible& e : eligible) {
      for (const Eligible& o : eligible) {
        if (&o == &e) continue;
        const std::string m = missing(e.received, o.received);
        if (!m.empty()) {
          lacks.push_back(
              fmt::format("\"{}\" lacks {} that \"{}\" received", e.info->name, m, o.info->name));
        }
      }
    }
    return fail(Errc::failed_precondition,
                fmt::format("no replica received every transaction the others did: {}",
                            fmt::join(lacks, "; ")));
  }
  // Among those, the one that applied everything the others applied; else the first that no
  // other strictly exceeds (always exists: containment is a partial order).
  for (const Eligible* e : complete) {
    const bool applied_all = std::all_of(complete.begin(), complete.end(), [&](const Eligible* o) {
      return contains(e->info->current_pos, o->info->current_pos);
    });
    if (applied_all) return e->info->name;
  }
  for (const Eligible* e : complete) {
    const bool maximal = std::none_of(complete.begin(), complete.end(), [&](const Eligible* o) {
      return ahead_of(o->info->current_pos, e->info->current_pos);
    });
    if (maximal) return e->info->name;
  }
  return complete.front()->info->name;
}

}  // namespace neco::mysql
