#include "agent/cluster/https_client.hpp"

#include <curl/curl.h>
#include <fmt/format.h>

#include <memory>

namespace neco::cluster {
namespace {

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

std::size_t collect(char* data, std::size_t size, std::size_t n, void* user) {
  auto* out = static_cast<std::string*>(user);
  // Cluster API answers are small JSON documents; a runaway peer must not exhaust memory.
  if (out->size() + size * n > (std::size_t{16} << 20)) return 0;
  out->append(data, size * n);
  return size * n;
}

int check_abort(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<std::atomic<bool>*>(user)->load() ? 1 : 0;
}

curl_blob blob(const std::string& pem) {
  return curl_blob{const_cast<char*>(pem.data()), pem.size(), CURL_BLOB_COPY};
}

}  // namespace

HttpsClient::HttpsClient(std::vector<std::string> endpoints) : endpoints_(std::move(endpoints)) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

void HttpsClient::abort() {
  aborted_ = true;
}

HttpsClient::~HttpsClient() {
  for (auto& h : idle_)
    curl_easy_cleanup(static_cast<CURL*>(h.curl));
}

HttpsClient::Handle HttpsClient::acquire() {
  std::lock_guard lock(mu_);
  if (!idle_.empty()) {
    Handle h = idle_.back();
    idle_.pop_back();
    return h;
  }
  return Handle{curl_easy_init(), generation_};
}

void HttpsClient::release(Handle h) {
  std::lock_guard lock(mu_);
  if (h.curl == nullptr) return;
  if (h.generation != generation_ || aborted_.load()) {
    curl_easy_cleanup(static_cast<CURL*>(h.curl));
    return;
  }
  idle_.push_back(h);
}

void HttpsClient::set_identity(TlsIdentity identity) {
  std::lock_guard lock(mu_);
  identity_ = std::move(identity);
  ++generation_;
  for (auto& h : idle_)
    curl_easy_cleanup(static_cast<CURL*>(h.curl));
  idle_.clear();
}

std::string HttpsClient::current() const {
  std::lock_guard lock(mu_);
  return answered_ ? endpoints_[preferred_] : std::string();
}

Expected<HttpsReply> HttpsClient::request(const std::string& method, const std::string& path,
                                          const std::string& body,
                                          std::chrono::milliseconds timeout) {
  TlsIdentity id;
  std::size_t first = 0;
  {
    std::lock_guard lock(mu_);
    id = identity_;
    first = preferred_;
  }
  if (endpoints_.empty()) return fail(Errc::invalid_argument, "no controllers configured");
  if (aborted_.load()) return fail(Errc::cancelled, "shutting down");
  std::string tried;
  Errc code = Errc::unavailable;
  for (std::size_t k = 0; k < endpoints_.size(); ++k) {
    const std::size_t i = (first + k) % endpoints_.size();
    bool reached = false;
    Handle h = acquire();
    if (h.curl == nullptr) return fail(Errc::internal, "curl_easy_init failed");
    auto r = request_one(h.curl, endpoints_[i], id, method, path, body, timeout, reached);
    release(h);
    if (r) {
      std::lock_guard lock(mu_);
      preferred_ = i;
      answered_ = true;
      return r;
    }
    tried += fmt::format("{}{}: {}", tried.empty() ? "" : "; ", endpoints_[i], r.error().message);
    // A request that reached a controller and then failed may have been applied: do not send
    // it again elsewhere (joins are single-use, for one).
    if (reached || r.error().code == Errc::cancelled) return fail(r.error().code, tried);
    code = r.error().code;
  }
  return fail(code, fmt::format("no controller answered {} {} ({})", method, path, tried));
}

Expected<HttpsReply> HttpsClient::request_one(void* handle, const std::string& endpoint,
                                              const TlsIdentity& id, const std::string& method,
                                              const std::string& path, const std::string& body,
                                              std::chrono::milliseconds timeout, bool& reached) {
  CURL* c = static_cast<CURL*>(handle);
  // Options start from scratch for every request; the handle's open connections stay.
  curl_easy_reset(c);
  HttpsReply reply;
  reply.endpoint = endpoint;
  const std::string url = endpoint + path;
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::min<std::int64_t>(timeout.count(), 3000)));
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, check_abort);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &aborted_);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(c, CURLOPT_SSLVERSION, CURL_SSLVERSION_TLSv1_2);
  if (id.ca_pem.empty()) {
    // Only for fetching the CA itself, which the caller then checks against the pinned
    // fingerprint before trusting anything else it says.
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  } else {
    auto ca = blob(id.ca_pem);
    curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
    // Controllers are reached by the addresses they advertise; the CA is ours alone, so the
    // chain check is what matters, and the host check stays on.
  }
  if (!id.cert_pem.empty()) {
    auto cert = blob(id.cert_pem);
    auto key = blob(id.key_pem);
    curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert);
    curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
    curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key);
  }
  std::unique_ptr<curl_slist, SlistDeleter> headers(
      curl_slist_append(nullptr, "Content-Type: application/json"));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  if (method == "GET") {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    // Reached means the request may have been processed: it was sent over an established
    // connection and no answer came back in time.
    long connected = 0;
    curl_easy_getinfo(c, CURLINFO_CONNECT_TIME_T, &connected);
    reached = rc == CURLE_OPERATION_TIMEDOUT && connected > 0 && method != "GET";
    const std::string what = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_ABORTED_BY_CALLBACK) return fail(Errc::cancelled, "shutting down");
    return fail(rc == CURLE_OPERATION_TIMEDOUT ? Errc::deadline_exceeded : Errc::unavailable, what);
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  return reply;
}

}  // namespace neco::cluster
