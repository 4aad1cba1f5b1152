// What a route handler returns; the server adds Content-Length, Server and Connection.
#pragma once

#include <boost/beast/http/status.hpp>

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <string_view>

#include "agent/http/request.hpp"

namespace neco::http {

using Status = boost::beast::http::status;

// One HTTP response.
struct Response {
  Status status = Status::ok;                     // status code
  std::string content_type = "application/json";  // Content-Type header value
  std::string body;                               // payload (omitted on the wire for HEAD)
  Pairs headers;                                  // extra header fields, e.g. Allow, Location

  // A JSON document response (body is `value.dump()` plus a newline, for curl users).
  static Response json(const nlohmann::json& value, Status status = Status::ok);
  // The uniform error shape: {"error": "<error_code>", "message": "<message>"}.
  static Response error(Status status, std::string_view error_code, std::string_view message);
  // A plain text response (text/plain; charset=utf-8).
  static Response text(std::string body, Status status = Status::ok);
};

// The HTTP status for an error code: invalid_argument 400, not_found 404, already_exists and
// failed_precondition 409, permission_denied 403, unavailable and cancelled 503,
// deadline_exceeded 504, anything else 500.
Status http_status(Errc code) noexcept;
// Response::error with that status, the code's name and the error's message.
Response error_response(const Error& error);

}  // namespace neco::http
