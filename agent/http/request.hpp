// What a route handler sees of one HTTP request, and the pure target parsing behind it (pure so
// the fuzzer can drive it without sockets).
#pragma once

#include <boost/beast/http/verb.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/util/error.hpp"
#include "agent/util/text.hpp"

namespace neco::http {

using Verb = boost::beast::http::verb;

// Ordered name/value pairs: query strings and headers may repeat a name.
using Pairs = std::vector<std::pair<std::string, std::string>>;

// One parsed request; the server fills it, the router adds path_params, handlers read it.
struct Request {
  Verb method = Verb::get;  // request method; unknown verbs never reach a handler
  std::string target;       // raw request-target as received (still percent-encoded)
  std::string path;         // percent-decoded, normalised absolute path (no "..", no NUL)
  Pairs query;              // percent-decoded query parameters in order, names may repeat
  Pairs headers;            // header fields as received
  std::string body;         // request body (bounded by ServerLimits::max_body_bytes)
  Pairs path_params;        // values bound by `{name}` / `{rest...}` segments of the route
  std::string peer;         // "127.0.0.1:53412" or "unix" — for logs only
  // Subject CN of the TLS client certificate, set only when it was verified against the
  // listener's client CA; empty on plain connections and TLS without a client certificate.
  std::string peer_identity;
  std::string peer_cert_fingerprint;  // "sha256:<hex of the DER>" of that same certificate

  // First header with this name (case-insensitive), if any.
  std::optional<std::string_view> header(std::string_view name) const;
  // First query parameter with this name, if any.
  std::optional<std::string_view> query_param(std::string_view name) const;
  // All values of a repeated query parameter, in order.
  std::vector<std::string_view> query_params(std::string_view name) const;
  // Value bound to a `{name}` segment of the matched route, if any.
  std::optional<std::string_view> path_param(std::string_view name) const;
};

// A request-target split into its decoded path and query.
struct Target {
  std::string path;  // normalised, see normalise_path()
  Pairs query;       // decoded, see parse_query()
};

// Decodes %XX escapes; `plus_is_space` for query components. Fails on a bad escape or NUL.
Expected<std::string> percent_decode(std::string_view text, bool plus_is_space);

// Decodes and normalises an absolute path: collapses "//", drops "." segments, resolves ".."
// and refuses any ".." that would climb above "/"; a trailing "/" is dropped (except for "/").
Expected<std::string> normalise_path(std::string_view raw_path);

// Splits "a=1&b=&c" into decoded pairs ("c" has an empty value).
Expected<Pairs> parse_query(std::string_view raw_query);

// Parses an origin-form ("/p?q") or absolute-form ("http://h/p?q") request-target.
Expected<Target> parse_target(std::string_view target);

// ASCII case-insensitive equality, as header names compare (shared with the rest of the core).
using ::neco::iequals;

}  // namespace neco::http
