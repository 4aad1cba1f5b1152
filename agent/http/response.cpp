#include "agent/http/response.hpp"

#include <nlohmann/json.hpp>

namespace neco::http {

Response Response::json(const nlohmann::json& value, Status status) {
  Response r;
  r.status = status;
  // `replace` keeps a handler's stray invalid UTF-8 from turning into an exception (a 500).
  r.body = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  r.body.push_back('\n');
  return r;
}

Response Response::error(Status status, std::string_view error_code, std::string_view message) {
  return json(nlohmann::json{{"error", error_code}, {"message", message}}, status);
}

Response Response::text(std::string body, Status status) {
  Response r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body);
  return r;
}

Status http_status(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_argument:
      return Status::bad_request;
    case Errc::not_found:
      return Status::not_found;
    case Errc::already_exists:
    case Errc::failed_precondition:
      return Status::conflict;
    case Errc::permission_denied:
      return Status::forbidden;
    case Errc::unavailable:
    case Errc::cancelled:
      return Status::service_unavailable;
    case Errc::deadline_exceeded:
      return Status::gateway_timeout;
    default:
      return Status::internal_server_error;
  }
}

Response error_response(const Error& error) {
  return Response::error(http_status(error.code), to_string(error.code), error.message);
}

}  // namespace neco::http
