// Small text helpers for header values and similar ASCII protocols.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace neco {

// Strips HTTP optional whitespace (spaces and tabs) from both ends.
std::string_view trim_ows(std::string_view s) noexcept;

// Lowercase hex of arbitrary bytes, and back (lowercase only; nullopt for an odd length or
// another character).
std::string to_hex(std::string_view bytes);
std::optional<std::string> from_hex(std::string_view hex);

// ASCII case-insensitive equality, as header names and tokens compare.
bool iequals(std::string_view a, std::string_view b) noexcept;

// Calls fn(item) for each `sep`-separated item of s, trimmed of optional whitespace; empty
// items are passed too (callers decide whether "a,,b" matters).
template <class Fn>
void for_each_item(std::string_view s, char sep, Fn&& fn) {
  while (true) {
    const auto pos = s.find(sep);
    fn(trim_ows(s.substr(0, pos)));
    if (pos == std::string_view::npos) return;
    s.remove_prefix(pos + 1);
  }
}

}  // namespace neco
