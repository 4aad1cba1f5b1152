#include "agent/cli/admin_client.hpp"

#include <curl/curl.h>
#include <fmt/format.h>

#include <memory>

namespace neco::cli {
namespace {

size_t append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
  ~CurlGlobal() { curl_global_cleanup(); }
};

}  // namespace

std::string AdminTarget::describe() const {
  return socket.empty() ? base_url : socket;
}

Expected<AdminReply> admin_request(const AdminTarget& target, const std::string& method,
                                   const std::string& path, const std::string& body,
                                   std::chrono::milliseconds timeout) {
  static CurlGlobal global;
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return fail(Errc::internal, "cannot initialise libcurl");
  AdminReply reply;
  const std::string url = (target.socket.empty() ? target.base_url : "http://localhost") + path;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  if (!target.socket.empty()) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, target.socket.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");  // the admin endpoint is local, never proxied
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
  if (method != "GET") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
      return fail(Errc::unavailable,
                  fmt::format("agent not running at {} ({}); start it with `neco agent --role "
                              "/etc/neco/role.yaml` or `systemctl start neco-agent`, or point the "
                              "CLI elsewhere with --admin URL / --socket PATH",
                              target.describe(), curl_easy_strerror(rc)));
    }
    return fail(Errc::unavailable, fmt::format("request to the agent at {} failed: {}",
                                               target.describe(), curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  char* ct = nullptr;
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
  if (ct != nullptr) reply.content_type = ct;
  return reply;
}

}  // namespace neco::cli
