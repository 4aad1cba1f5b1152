// File responses against a real HTTP client: the curl command line fetching ranges (-r), the
// whole file and the header only (-I) from an in-process server on 127.0.0.1. Meson passes
// curl's path in CURL; without it the test exits 77, which Meson reports as SKIP.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/unit/agent/http/file_test_support.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;

std::string curl_or_skip() {
  const char* path = std::getenv("CURL");
  if (path == nullptr || *path == '\0' || ::access(path, X_OK) != 0) {
    std::fprintf(stderr, "SKIP: curl not found (install the Debian package curl)\n");
    std::exit(77);
  }
  return path;
}

// Runs argv with stdout into `out` and stderr into `err`; returns the exit status.
int run(const std::vector<std::string>& args, const fs::path& out, const fs::path& err) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0].c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("curl fetches ranges, whole files and headers", "[http][file][curl]") {
  const auto curl = curl_or_skip();
  neco::testing::FileServer f;
  neco::testing::TempDir out;
  const auto size = f.content.size();
  // --noproxy: a proxy from the environment must not see loopback traffic.
  const std::vector<std::string> base = {curl, "-sS", "--noproxy", "*", "--max-time", "20"};
  auto fetch = [&](std::vector<std::string> extra, const std::string& path) {
    auto args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(f.url(path));
    const int rc = run(args, out / "body", out / "stderr");
    INFO("curl stderr: " << slurp(out / "stderr"));
    CHECK(rc == 0);
    return slurp(out / "body");
  };

  CHECK(fetch({"-r", "1000-1999"}, "/files/data.bin") == f.content.substr(1000, 1000));
  CHECK(fetch({"-r", "-4096"}, "/files/data.bin") == f.content.substr(size - 4096));
  CHECK(fetch({"-r", "3000000-"}, "/files/data.bin") == f.content.substr(3000000));
  CHECK(fetch({}, "/files/data.bin") == f.content);

  // Status and headers as curl reports them: the range reply, then HEAD.
  const auto ranged = fetch({"-r", "0-99", "-D", "-", "-o", "/dev/null"}, "/files/data.bin");
  CHECK(ranged.find("HTTP/1.1 206 Partial Content") == 0);
  CHECK(ranged.find("Content-Range: bytes 0-99/" + std::to_string(size) + "\r\n") !=
        std::string::npos);
  const auto head = fetch({"-I"}, "/files/data.bin");
  CHECK(head.find("HTTP/1.1 200 OK") == 0);
  CHECK(head.find("Content-Length: " + std::to_string(size) + "\r\n") != std::string::npos);
  CHECK(head.find("Accept-Ranges: bytes\r\n") != std::string::npos);
  const auto big_head = fetch({"-I"}, "/files/sparse.bin");
  CHECK(big_head.find("Content-Length: " + std::to_string(neco::testing::sparse_size) + "\r\n") !=
        std::string::npos);

  // Resuming a partial download (-C -) the way a boot loader retries: the rest, appended.
  neco::testing::write_file(out / "partial", f.content.substr(0, 777777));
  const int rc = run({curl, "-sS", "--noproxy", "*", "--max-time", "20", "-C", "-", "-o",
                      (out / "partial").string(), f.url("/files/data.bin")},
                     out / "body", out / "stderr");
  INFO("curl stderr: " << slurp(out / "stderr"));
  CHECK(rc == 0);
  CHECK(slurp(out / "partial") == f.content);
  CHECK(f.stats().timeouts == 0);
}
