// Failpoints (see failpoint.hpp): the NECO_FAILPOINTS parser, the armed table and hit().
#include "agent/util/failpoint.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>

#include "agent/util/text.hpp"

namespace neco::failpoint {

namespace {

constexpr std::size_t kMaxName = 128;
constexpr std::string_view kKill = "kill";

struct Armed {
  Action action;
  std::atomic<std::uint64_t> hits{0};
};

using Table = std::map<std::string, Armed, std::less<>>;

// Replaced only by arm(), before the threads that call hit() run (see the header).
std::unique_ptr<Table>& table() {
  static std::unique_ptr<Table> t;
  return t;
}
std::atomic<bool> g_armed{false};

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxName) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Expected<Action> parse_action(std::string_view action) {
  if (action.size() < kKill.size() || action.substr(action.size() - kKill.size()) != kKill) {
    return fail(Errc::invalid_argument, "unknown action (expected kill or Nkill, e.g. 2kill)");
  }
  const std::string_view count = action.substr(0, action.size() - kKill.size());
  Action a;
  if (count.empty()) return a;
  const auto* end = count.data() + count.size();
  auto [ptr, ec] = std::from_chars(count.data(), end, a.on_hit);
  if (ec != std::errc() || ptr != end || a.on_hit == 0) {
    return fail(Errc::invalid_argument,
                "the count before kill must be a whole number from 1 (e.g. 2kill)");
  }
  return a;
}

// Writes straight to fd 2: nothing is buffered, and the process is about to be killed.
void say(std::string_view name, std::uint64_t hits) {
  const std::string line = "neco: failpoint " + std::string(name) + " reached (hit " +
                           std::to_string(hits) + "): sending SIGKILL to self\n";
  const ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace

Expected<std::map<std::string, Action>> parse(std::string_view text) {
  std::map<std::string, Action> out;
  if (trim_ows(text).empty()) return out;
  std::optional<Error> error;
  for_each_item(text, ',', [&](std::string_view entry) {
    if (error) return;
    const auto bad = [&](const std::string& why) {
      error = Error{Errc::invalid_argument, "entry \"" + std::string(entry) + "\": " + why};
    };
    if (entry.empty()) return bad("empty (two commas in a row, or a trailing comma)");
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) return bad("expected NAME=ACTION");
    const std::string_view name = trim_ows(entry.substr(0, eq));
    const std::string_view action = trim_ows(entry.substr(eq + 1));
    if (!valid_name(name)) {
      return bad("the name must be 1..128 characters of [A-Za-z0-9_.-]");
    }
    auto parsed = parse_action(action);
    if (!parsed) return bad(parsed.error().message);
    if (!out.emplace(std::string(name), *parsed).second) return bad("the name is given twice");
  });
  if (error) return std::unexpected(*error);
  return out;
}

Expected<void> arm(std::string_view text) {
  auto parsed = parse(text);
  g_armed.store(false);
  table().reset();
  if (!parsed) return std::unexpected(parsed.error());
  if (parsed->empty()) return {};
  auto t = std::make_unique<Table>();
  for (const auto& [name, action] : *parsed)
    (*t)[name].action = action;
  table() = std::move(t);
  g_armed.store(true);
  return {};
}

Expected<void> arm_from_environment() {
  const std::string variable(kEnvironmentVariable);
  const char* value = std::getenv(variable.c_str());
  if (auto ok = arm(value == nullptr ? "" : value); !ok) {
    return fail(ok.error().code, variable + ": " + ok.error().message);
  }
  return {};
}

std::string armed_names() {
  std::string out;
  if (!g_armed.load() || !table()) return out;
  for (const auto& entry : *table()) {
    if (!out.empty()) out += ',';
    out += entry.first;
  }
  return out;
}

bool any_armed() noexcept {
  return g_armed.load(std::memory_order_relaxed);
}

void hit(std::string_view name) {
  if (!any_armed()) return;
  const auto& t = table();
  if (!t) return;
  auto it = t->find(name);
  if (it == t->end()) return;
  const std::uint64_t n = it->second.hits.fetch_add(1) + 1;
  if (n != it->second.action.on_hit) return;
  say(name, n);
  ::kill(::getpid(), SIGKILL);
}

}  // namespace neco::failpoint
