// A small blocking HTTPS client for the cluster API (libcurl): the cluster CA pinned from
// memory, an optional client certificate from memory, a deadline per request, and failover
// across the controllers. Call it from a worker or the node's own thread, never the event loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "agent/util/error.hpp"

namespace neco::cluster {

struct TlsIdentity {
  std::string ca_pem;    // trust exactly this CA; empty: no verification (CA discovery only)
  std::string cert_pem;  // client certificate (mutual TLS); empty for none
  std::string key_pem;   // its private key
};

struct HttpsReply {
  long status = 0;
  std::string body;
  std::string endpoint;  // the controller that answered
};

class HttpsClient {
 public:
  explicit HttpsClient(std::vector<std::string> endpoints);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  // Replaces the TLS material (after joining, after renewal); thread-safe.
  void set_identity(TlsIdentity identity);

  // Sends one request to the controller that last answered, then to the others in order when a
  // controller cannot be reached. A reply with any HTTP status is an answer. Transport errors
  // become unavailable (or deadline_exceeded) naming every controller tried.
  Expected<HttpsReply> request(const std::string& method, const std::string& path,
                               const std::string& body, std::chrono::milliseconds timeout);

  // The controller that answered last ("" before the first answer).
  std::string current() const;

  // Ends every transfer in progress and refuses new ones (shutdown); thread-safe.
  void abort();

 private:
  Expected<HttpsReply> request_one(void* handle, const std::string& endpoint, const TlsIdentity& id,
                                   const std::string& method, const std::string& path,
                                   const std::string& body, std::chrono::milliseconds timeout,
                                   bool& reached);

  // Idle curl handles, kept so that each keeps its TLS connection to a controller alive:
  // a heartbeat then costs one request, not a TCP and TLS handshake. Dropped when the
  // identity changes (generation_), so no connection outlives the certificate it was made with.
  struct Handle {
    void* curl = nullptr;
    std::uint64_t generation = 0;
  };
  Handle acquire();
  void release(Handle h);

  std::vector<std::string> endpoints_;
  mutable std::mutex mu_;
  TlsIdentity identity_;
  std::vector<Handle> idle_;
  std::uint64_t generation_ = 0;
  std::size_t preferred_ = 0;
  bool answered_ = false;
  std::atomic<bool> aborted_{false};
};

}  // namespace neco::cluster
