// Expected failures are values: every fallible interface returns neco::Expected<T>.
#pragma once

#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace neco {

// Broad categories, chosen so an HTTP layer and a CLI can react to them without parsing text.
enum class Errc {
  invalid_argument,     // the caller sent something malformed; retrying will not help
  not_found,            // the named thing does not exist
  already_exists,       // a create met an existing thing
  failed_precondition,  // a compare, fence or state check did not hold
  unavailable,          // a dependency cannot be reached right now; retry later
  deadline_exceeded,    // a deadline ran out before an answer
  compacted,            // the requested revision is older than the store keeps
  cancelled,            // the operation was stopped on purpose (shutdown, watch cancel)
  permission_denied,    // the caller is known but may not do this (wrong identity, bad token)
  internal,             // a bug or an unexpected library failure
};

// Stable lower_snake name of a code, used in JSON errors and logs.
std::string_view to_string(Errc code) noexcept;

struct Error {
  Errc code = Errc::internal;
  std::string message;
};

template <class T = void>
using Expected = std::expected<T, Error>;

// Shorthand for `return fail(Errc::x, "...")` at error sites.
inline std::unexpected<Error> fail(Errc code, std::string message) {
  return std::unexpected<Error>(Error{code, std::move(message)});
}

}  // namespace neco
