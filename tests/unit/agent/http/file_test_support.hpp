// A plain-HTTP server on 127.0.0.1:0 whose routes serve files from a temp directory through
// file_response(): random content of a few MB, a sparse 1 GiB file, a directory, a symlink and
// files that the handler deletes, replaces or truncates after opening them. Shared by the file
// response tests and the curl test.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <boost/asio/awaitable.hpp>
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "agent/http/file_response.hpp"
#include "agent/http/server.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/agent/http/server_fixture.hpp"

namespace neco::testing {

// `size` bytes from a seeded generator: reproducible, and no two offsets alike by accident.
inline std::string random_bytes(std::size_t size, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    const auto v = gen();
    for (std::size_t b = 0; b < 8 && i + b < size; ++b)
      out[i + b] = static_cast<char>((v >> (8 * b)) & 0xff);
  }
  return out;
}

inline constexpr std::uint64_t sparse_size = 1ULL << 30;  // 1 GiB, all holes

struct FileServer {
  explicit FileServer(http::ServerLimits limits = {})
      : content(random_bytes(std::size_t{3} * 1024 * 1024 + 12'345, 7)) {
    write_file(dir / "data.bin", content);
    const int fd = ::open((dir / "sparse.bin").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(sparse_size)) == 0);
    ::close(fd);
    std::filesystem::create_directory(dir / "subdir");
    std::filesystem::create_symlink(dir / "data.bin", dir / "link.bin");
    server.emplace(
        limits, [this](std::atomic<int>&) { return routes(); },
        [](http::Server& s) { return s.listen_tcp("127.0.0.1", 0); });
  }

  std::uint16_t port() const { return server->port; }
  const http::ServerStats& stats() const { return server->stats(); }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port()) + path;
  }

  std::shared_ptr<const http::Router> routes() {
    auto r = std::make_shared<http::Router>();
    auto add = [&](std::string_view path, http::Handler h) {
      auto added = r->add(path, "test file route", std::move(h));
      REQUIRE(added);
    };
    // /files/NAME serves dir/NAME as it is.
    add("/files/{name}", [this](http::Request& req) -> boost::asio::awaitable<http::Response> {
      co_return http::file_response(req, dir / std::string(*req.path_param("name")),
                                    "application/octet-stream");
    });
    add("/tagged", [this](http::Request& req) -> boost::asio::awaitable<http::Response> {
      co_return http::file_response(req, dir / "data.bin", "application/octet-stream", "v1-abc");
    });
    // Opens the file, then deletes / replaces / truncates it before the server streams it.
    add("/vanishing", [this](http::Request& req) -> boost::asio::awaitable<http::Response> {
      write_file(dir / "vanishing.bin", content);
      auto res = http::file_response(req, dir / "vanishing.bin", "application/octet-stream");
      std::filesystem::remove(dir / "vanishing.bin");
      co_return res;
    });
    add("/replaced", [this](http::Request& req) -> boost::asio::awaitable<http::Response> {
      write_file(dir / "replaced.bin", content);
      auto res = http::file_response(req, dir / "replaced.bin", "application/octet-stream");
      write_file(dir / "replacement.tmp", std::string(content.size(), 'R'));
      std::filesystem::rename(dir / "replacement.tmp", dir / "replaced.bin");
      co_return res;
    });
    add("/shrinking", [this](http::Request& req) -> boost::asio::awaitable<http::Response> {
      write_file(dir / "shrinking.bin", content);
      auto res = http::file_response(req, dir / "shrinking.bin", "application/octet-stream");
      std::filesystem::resize_file(dir / "shrinking.bin", content.size() / 2);
      co_return res;
    });
    return r;
  }

  TempDir dir;
  std::string content;  // of data.bin
  std::optional<ServerFixture> server;
};

}  // namespace neco::testing
