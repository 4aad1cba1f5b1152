// Failpoints: named places in the code where a fault test (or an operator rehearsing a failure)
// can make the agent crash on purpose, deterministically, instead of racing a `kill -9` against
// the code. A failpoint is armed through the environment of the agent process:
//
//   NECO_FAILPOINTS=NAME=ACTION[,NAME=ACTION...]
//
// ACTION is `kill` (the process sends itself SIGKILL the first time it reaches NAME: a real
// kill -9, nothing is flushed, no destructor or atexit handler runs) or `Nkill` with N >= 1
// (the N-th time it reaches NAME). NAME is 1..128 characters of [A-Za-z0-9_.-]. Each name may
// appear once. A malformed entry or an unknown action is an error naming the entry, and the
// agent refuses to start: a fault test must not silently run without its fault.
//
// The agent parses the variable once at start (arm_from_environment()), before its threads run;
// hit() is then a lock-free lookup, and a single relaxed atomic load when nothing is armed.
// Modules name their failpoints in their docs (e.g. mysql.before.promote in mysql.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "agent/util/error.hpp"

namespace neco::failpoint {

// The environment variable arm_from_environment() reads.
inline constexpr std::string_view kEnvironmentVariable = "NECO_FAILPOINTS";

// What happens when an armed failpoint is reached.
struct Action {
  std::uint64_t on_hit = 1;  // SIGKILL on this hit (1 = the first)
  friend bool operator==(const Action&, const Action&) = default;
};

// Parses the variable's text (see above) into name -> action. Empty or all-blank text arms
// nothing. Errors (invalid_argument) quote the offending entry.
Expected<std::map<std::string, Action>> parse(std::string_view text);

// Parses `text` and arms its failpoints, replacing any armed before. Call before other threads
// may call hit() (the table is not locked). On error nothing is armed.
Expected<void> arm(std::string_view text);

// arm() with the value of NECO_FAILPOINTS (nothing armed when unset). The error says which
// variable and entry were wrong.
Expected<void> arm_from_environment();

// The names armed now, comma-separated and sorted ("" when none), for a start-up warning.
std::string armed_names();

// Called where a failpoint sits: counts the hit and performs the action when due. Does nothing
// (one atomic load) when no failpoint is armed.
void hit(std::string_view name);

// Whether any failpoint is armed: lets a caller skip building a name it would pass to hit().
bool any_armed() noexcept;

}  // namespace neco::failpoint
