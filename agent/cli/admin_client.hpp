// The CLI's side of the local admin endpoint: one HTTP request over TCP or a unix socket
// (libcurl), with errors that say what to do.
#pragma once

#include <chrono>
#include <string>

#include "agent/util/error.hpp"

namespace neco::cli {

struct AdminTarget {
  std::string base_url = "http://127.0.0.1:9180";  // scheme://host:port
  std::string socket;                              // non-empty: talk over this unix socket
  std::string describe() const;                    // for messages: the socket or the URL
};

struct AdminReply {
  long status = 0;
  std::string content_type;
  std::string body;
};

// Sends one request; transport failures become unavailable with advice on starting the agent.
Expected<AdminReply> admin_request(const AdminTarget& target, const std::string& method,
                                   const std::string& path, const std::string& body = "",
                                   std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace neco::cli
