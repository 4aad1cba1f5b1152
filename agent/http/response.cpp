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

}  // namespace neco::http
