// Unit tests for agent/util/failpoint: the NECO_FAILPOINTS grammar (accepted forms, each kind of
// malformed entry refused with the entry named) and hit() in a forked child, which must die by
// SIGKILL on exactly the configured hit and not before.
#include "agent/util/failpoint.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdlib>

namespace fp = neco::failpoint;

namespace {

// Runs `body` in a child process; returns its wait status.
template <class Fn>
int in_child(Fn&& body) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    body();
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

}  // namespace

TEST_CASE("failpoint: parse accepts kill and Nkill entries", "[failpoint]") {
  auto empty = fp::parse("  ");
  REQUIRE(empty);
  CHECK(empty->empty());

  auto p = fp::parse("mysql.after.promote=kill, mysql.before.repoint = 3kill,a-b_c=1kill");
  REQUIRE(p);
  REQUIRE(p->size() == 3);
  CHECK(p->at("mysql.after.promote").on_hit == 1);
  CHECK(p->at("mysql.before.repoint").on_hit == 3);
  CHECK(p->at("a-b_c").on_hit == 1);
}

TEST_CASE("failpoint: parse refuses malformed entries, naming them", "[failpoint]") {
  struct Case {
    const char* text;
    const char* entry;
    const char* why;
  };
  const Case cases[] = {
      {"x=kill,,y=kill", "\"\"", "empty"},
      {"x=kill,", "\"\"", "empty"},
      {"mysql.after.promote", "\"mysql.after.promote\"", "NAME=ACTION"},
      {"x=panic", "\"x=panic\"", "unknown action"},
      {"x=", "\"x=\"", "unknown action"},
      {"x=0kill", "\"x=0kill\"", "whole number from 1"},
      {"x=-1kill", "\"x=-1kill\"", "whole number from 1"},
      {"x=2 kill", "\"x=2 kill\"", "whole number from 1"},
      {"x=killkill", "\"x=killkill\"", "whole number from 1"},
      {"=kill", "\"=kill\"", "[A-Za-z0-9_.-]"},
      {"a b=kill", "\"a b=kill\"", "[A-Za-z0-9_.-]"},
      {"x=kill,x=2kill", "\"x=2kill\"", "twice"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto p = fp::parse(c.text);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == neco::Errc::invalid_argument);
    CHECK_THAT(p.error().message, Catch::Contains(std::string("entry ") + c.entry));
    CHECK_THAT(p.error().message, Catch::Contains(c.why));
  }
  std::string long_name(129, 'a');
  CHECK_FALSE(fp::parse(long_name + "=kill"));
  CHECK(fp::parse(long_name.substr(1) + "=kill"));
}

TEST_CASE("failpoint: arm_from_environment names the variable; a bad value arms nothing",
          "[failpoint]") {
  REQUIRE(::setenv("NECO_FAILPOINTS", "x=kill", 1) == 0);
  REQUIRE(fp::arm_from_environment());
  CHECK(fp::any_armed());
  CHECK(fp::armed_names() == "x");

  REQUIRE(::setenv("NECO_FAILPOINTS", "x=explode", 1) == 0);
  auto bad = fp::arm_from_environment();
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::StartsWith("NECO_FAILPOINTS: entry \"x=explode\""));
  CHECK_FALSE(fp::any_armed());
  CHECK(fp::armed_names().empty());

  REQUIRE(::unsetenv("NECO_FAILPOINTS") == 0);
  REQUIRE(fp::arm_from_environment());
  CHECK_FALSE(fp::any_armed());
  fp::hit("x");  // nothing armed: a no-op
}

TEST_CASE("failpoint: hit kills the process on the configured hit, not before", "[failpoint]") {
  // `a` dies on its second hit; hits of other names never count.
  const int status = in_child([] {
    if (!fp::arm("a=2kill,b=kill")) ::_exit(3);
    fp::hit("c");
    fp::hit("a");
    fp::hit("a");
    ::_exit(5);  // not reached
  });
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);

  // Armed but never reached: the child exits normally.
  const int spared = in_child([] {
    if (!fp::arm("a=kill")) ::_exit(3);
    fp::hit("ab");
    fp::hit("mysql.after.a");
  });
  REQUIRE(WIFEXITED(spared));
  CHECK(WEXITSTATUS(spared) == 0);

  // One hit before the count is reached: alive; the exit code proves the path was taken.
  const int counted = in_child([] {
    if (!fp::arm("a=3kill")) ::_exit(3);
    fp::hit("a");
    fp::hit("a");
    ::_exit(7);
  });
  REQUIRE(WIFEXITED(counted));
  CHECK(WEXITSTATUS(counted) == 7);
}
