// What a route handler returns; the server adds Content-Length, Server and Connection. The payload
// is either an in-memory string or a region of an open file, which the server streams in bounded
// chunks (boot images of hundreds of MB never sit in memory); see file_response.hpp for the
// helper that builds file responses with ranges and validators.
#pragma once

#include <boost/beast/http/status.hpp>

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agent/http/file_handle.hpp"
#include "agent/http/request.hpp"

namespace neco::http {

using Status = boost::beast::http::status;

// A region of an open file sent as the payload. The server sends Content-Length = length and
// then pread()s the region chunk by chunk; should the file turn out shorter than offset + length
// it closes the connection (the client sees a short body) rather than pad.
struct FileBody {
  std::shared_ptr<const FileHandle> file;  // shared: a handler may cache open files
  std::uint64_t offset = 0;                // first byte sent
  std::uint64_t length = 0;                // bytes sent (the Content-Length)
};

// One HTTP response. 304 and 204 carry no payload and no Content-Length on the wire.
struct Response {
  Status status = Status::ok;                     // status code
  std::string content_type = "application/json";  // Content-Type value; empty: none sent
  std::string body;                               // payload (omitted on the wire for HEAD)
  // When set, the payload is this file region instead of `body` (which must then be empty; a
  // response with both is answered 500). HEAD gets the same Content-Length and no payload.
  std::optional<FileBody> file;
  Pairs headers;  // extra header fields, e.g. Allow, Location, Content-Range

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
