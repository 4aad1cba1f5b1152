// The TFTP server against real clients: curl's tftp:// (RFC 2347 options: tsize and blksize)
// and tftp-hpa's `tftp` (plain RFC 1350, 512-byte blocks). The server runs in process on
// 127.0.0.1; the client is spawned and its file compared byte for byte. Meson passes the
// clients' paths in CURL and TFTP and runs each tag on its own; without its client a test
// exits 77, which Meson reports as SKIP (Catch2 2 has no SKIP of its own).
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/unit/modules/netboot/tftp_test_support.hpp"

extern char** environ;

namespace {

using namespace neco::netboot::tftp;
using namespace neco::netboot::tftp::testing;
namespace fs = std::filesystem;

// The client named by the environment variable, or exit 77 (SKIP) when it is not installed.
std::string client_or_skip(const char* var, const char* package) {
  const char* path = std::getenv(var);
  if (path == nullptr || *path == '\0' || ::access(path, X_OK) != 0) {
    std::fprintf(stderr, "SKIP: %s not found (install the Debian package %s; tools/install-deps)\n",
                 var, package);
    std::exit(77);
  }
  return path;
}

// Runs argv with stdout and stderr into `log`, in directory `cwd`; returns the exit status.
int run(const std::vector<std::string>& args, const fs::path& log, const fs::path& cwd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
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

std::string text_of(const fs::path& p) {
  const auto b = read_file(p);
  return std::string(b.begin(), b.end());
}

struct Setup {
  TempDir dir;
  fs::path root = dir.path / "root";
  fs::path out = dir.path / "out";
  fs::path log = dir.path / "client.log";
  ServerConfig config;
  Setup() {
    fs::create_directories(root);
    fs::create_directories(out);
    config.root_dir = root.string();
  }
};

}  // namespace

TEST_CASE("curl downloads over tftp:// with tsize and blksize", "[curl]") {
  const auto curl = client_or_skip("CURL", "curl");
  Setup s;
  const auto content = random_bytes(std::size_t{4} * 1024 * 1024 + 123, 42);
  write_file(s.root / "ipxe.efi", content);
  const auto exact = random_bytes(std::size_t{1468} * 100, 43);  // ends with an empty block
  write_file(s.root / "exact.bin", exact);
  ServerFixture server(s.config);
  const auto url = [&](const std::string& name) {
    return "tftp://127.0.0.1:" + std::to_string(server.port()) + "/" + name;
  };
  const auto get = [&](std::vector<std::string> extra, const std::string& name) {
    std::vector<std::string> args = {curl, "--silent", "--show-error", "--max-time", "120"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {url(name), "-o", (s.out / name).string()});
    const int rc = run(args, s.log, s.dir.path);
    INFO(text_of(s.log));
    return rc;
  };

  SECTION("blksize 1468") {
    REQUIRE(get({"--tftp-blksize", "1468"}, "ipxe.efi") == 0);
    CHECK(read_file(s.out / "ipxe.efi") == content);
    REQUIRE(get({"--tftp-blksize", "1468"}, "exact.bin") == 0);
    CHECK(read_file(s.out / "exact.bin") == exact);
  }
  SECTION("blksize above the server's limit is cut to 1468") {
    REQUIRE(get({"--tftp-blksize", "8192"}, "ipxe.efi") == 0);
    CHECK(read_file(s.out / "ipxe.efi") == content);
  }
  SECTION("curl's default options") {
    REQUIRE(get({}, "ipxe.efi") == 0);
    CHECK(read_file(s.out / "ipxe.efi") == content);
  }
  SECTION("no options at all (plain RFC 1350)") {
    REQUIRE(get({"--tftp-no-options"}, "ipxe.efi") == 0);
    CHECK(read_file(s.out / "ipxe.efi") == content);
  }
  SECTION("a missing file is an error for curl") {
    CHECK(get({}, "missing.efi") != 0);
    CHECK(server.stats().refused(RefuseReason::not_found) == 1);
    return;
  }
  REQUIRE(wait_for([&] { return server.stats().active_transfers == 0; }));
  CHECK(server.stats().failed(FailReason::timeout) == 0);
  CHECK(server.stats().transfers_completed >= 1);
}

TEST_CASE("curl downloads a file of more than 65535 blocks (block number rollover)", "[curl]") {
  const auto curl = client_or_skip("CURL", "curl");
  Setup s;
  // 512-byte blocks: 65536 + 3 blocks, so block numbers wrap from 65535 to 0.
  const auto content = random_bytes(std::size_t{512} * 65538 + 7, 44);
  write_file(s.root / "big.img", content);
  ServerFixture server(s.config);
  const std::vector<std::string> args = {
      curl,
      "--silent",
      "--show-error",
      "--max-time",
      "300",
      "--tftp-no-options",
      "tftp://127.0.0.1:" + std::to_string(server.port()) + "/big.img",
      "-o",
      (s.out / "big.img").string()};
  const int rc = run(args, s.log, s.dir.path);
  INFO(text_of(s.log));
  REQUIRE(rc == 0);
  CHECK(read_file(s.out / "big.img") == content);
  REQUIRE(wait_for([&] { return server.stats().transfers_completed == 1; }));
}

TEST_CASE("tftp-hpa's client downloads in binary mode", "[tftp-hpa]") {
  const auto tftp = client_or_skip("TFTP", "tftp-hpa");
  Setup s;
  const auto content = random_bytes(std::size_t{3} * 1024 * 1024 + 77, 45);
  write_file(s.root / "undionly.kpxe", content);
  write_file(s.root / "empty", {});
  write_file(s.root / "sub" / "exact.bin", random_bytes(std::size_t{512} * 20, 46));
  ServerFixture server(s.config);
  const auto get = [&](const std::string& remote, const std::string& local) {
    const int rc = run({tftp, "127.0.0.1", std::to_string(server.port()), "-m", "binary", "-c",
                        "get", remote, (s.out / local).string()},
                       s.log, s.dir.path);
    UNSCOPED_INFO(text_of(s.log));
    return rc;
  };
  REQUIRE(get("undionly.kpxe", "undionly.kpxe") == 0);
  CHECK(read_file(s.out / "undionly.kpxe") == content);
  REQUIRE(get("empty", "empty") == 0);
  CHECK(fs::exists(s.out / "empty"));
  CHECK(fs::file_size(s.out / "empty") == 0);
  REQUIRE(get("sub/exact.bin", "exact.bin") == 0);
  CHECK(read_file(s.out / "exact.bin") == read_file(s.root / "sub" / "exact.bin"));
  REQUIRE(wait_for([&] { return server.stats().transfers_completed == 3; }));

  // A refusal reaches the user as the server's message.
  get("../etc/passwd", "passwd");
  CHECK(text_of(s.log).find("'..' is not allowed in file names") != std::string::npos);
  CHECK(server.stats().refused(RefuseReason::access_violation) == 1);
}
