// A Server listening on 127.0.0.1:0 with its io_context on a background thread; shared by the
// plain and the TLS server tests, which differ only in their routes and listener.
#pragma once

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "agent/http/server.hpp"
#include "tests/support/test_support.hpp"

namespace neco::testing {

struct ServerFixture {
  using Routes = std::function<std::shared_ptr<const http::Router>(std::atomic<int>&)>;
  using Listen = std::function<Expected<boost::asio::ip::tcp::endpoint>(http::Server&)>;

  ServerFixture(http::ServerLimits limits, const Routes& routes, const Listen& listen) {
    server.emplace(io, limits, log::Logger("http.test"));
    server->set_router(routes(slow_started));
    auto ep = listen(*server);
    REQUIRE(ep);
    port = ep->port();
    REQUIRE(port != 0);
    server->start();
    thread = std::thread([this] { io.run(); });
  }
  ~ServerFixture() {
    server->stop(std::chrono::milliseconds(0));
    wait_for([&] { return server->stopped(); }, std::chrono::seconds(5));
    work.reset();
    io.stop();
    thread.join();
    server.reset();
  }
  ServerFixture(const ServerFixture&) = delete;
  ServerFixture& operator=(const ServerFixture&) = delete;

  const http::ServerStats& stats() const { return server->stats(); }

  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::atomic<int> slow_started{0};  // handlers of slow routes count themselves here
  std::optional<http::Server> server;
  std::uint16_t port = 0;
  std::thread thread;
};

}  // namespace neco::testing
