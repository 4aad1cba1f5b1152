// Router matching and request-target parsing: pure functions, no sockets.
#include <catch2/catch.hpp>

#include "agent/http/request.hpp"
#include "agent/http/router.hpp"

namespace http = neco::http;
using http::RouteMatch;
using http::Verb;

namespace {

http::Handler ok_handler() {
  return [](http::Request&) -> boost::asio::awaitable<http::Response> {
    co_return http::Response::text("ok");
  };
}

std::string matched(const http::Router& r, Verb v, std::string_view path) {
  const auto m = r.match(v, path);
  return m.kind == RouteMatch::Kind::found ? m.route->path : std::string("-");
}

}  // namespace

TEST_CASE("percent_decode handles escapes, plus and refuses NUL", "[http]") {
  CHECK(http::percent_decode("a%20b%2Fc", false).value() == "a b/c");
  CHECK(http::percent_decode("a+b", true).value() == "a b");
  CHECK(http::percent_decode("a+b", false).value() == "a+b");
  CHECK_FALSE(http::percent_decode("%zz", false));
  CHECK_FALSE(http::percent_decode("%4", false));
  CHECK_FALSE(http::percent_decode("%", false));
  CHECK_FALSE(http::percent_decode("a%00b", false));
}

TEST_CASE("normalise_path collapses and refuses escapes above the root", "[http]") {
  CHECK(http::normalise_path("/").value() == "/");
  CHECK(http::normalise_path("//a///b/").value() == "/a/b");
  CHECK(http::normalise_path("/a/./b/../c").value() == "/a/c");
  CHECK(http::normalise_path("/a/%2e%2e/b").value() == "/b");
  CHECK(http::normalise_path("/%7Euser").value() == "/~user");
  CHECK_FALSE(http::normalise_path("/.."));
  CHECK_FALSE(http::normalise_path("/a/../../etc/passwd"));
  CHECK_FALSE(http::normalise_path("/%2e%2e/etc"));
  CHECK_FALSE(http::normalise_path("/a/%2F..%2F..%2Fetc"));
  CHECK_FALSE(http::normalise_path("/a%00b"));
  CHECK_FALSE(http::normalise_path("a/b"));
  CHECK_FALSE(http::normalise_path(""));
}

TEST_CASE("parse_query keeps order and repeated names", "[http]") {
  const auto q = http::parse_query("a=1&b=x+y&a=%32&&flag&=v").value();
  REQUIRE(q.size() == 5);
  CHECK(q[0] == std::pair<std::string, std::string>{"a", "1"});
  CHECK(q[1] == std::pair<std::string, std::string>{"b", "x y"});
  CHECK(q[2] == std::pair<std::string, std::string>{"a", "2"});
  CHECK(q[3] == std::pair<std::string, std::string>{"flag", ""});
  CHECK(q[4] == std::pair<std::string, std::string>{"", "v"});
  CHECK_FALSE(http::parse_query("a=%G1"));
}

TEST_CASE("parse_target splits origin-form and absolute-form targets", "[http]") {
  auto t = http::parse_target("/v1/x/../y?k=v#frag").value();
  CHECK(t.path == "/v1/y");
  REQUIRE(t.query.size() == 1);
  CHECK(t.query[0].second == "v");
  CHECK(http::parse_target("http://localhost:8080/a?b=c").value().path == "/a");
  CHECK(http::parse_target("HTTP://host").value().path == "/");
  CHECK(http::parse_target("http://host?x=1").value().query.size() == 1);
  CHECK_FALSE(http::parse_target("*"));
  CHECK_FALSE(http::parse_target("?x=1"));
  CHECK_FALSE(http::parse_target("/a?x=%"));
}

TEST_CASE("Request accessors", "[http]") {
  http::Request req;
  req.headers = {{"Content-Type", "text/plain"}, {"X-A", "1"}};
  req.query = {{"k", "1"}, {"k", "2"}};
  req.path_params = {{"id", "42"}};
  CHECK(req.header("content-type").value() == "text/plain");
  CHECK(req.header("CONTENT-TYPE").value() == "text/plain");
  CHECK_FALSE(req.header("missing"));
  CHECK(req.query_param("k").value() == "1");
  CHECK(req.query_params("k") == std::vector<std::string_view>{"1", "2"});
  CHECK(req.path_param("id").value() == "42");
  CHECK_FALSE(req.path_param("other"));
}

TEST_CASE("Router::add rejects malformed and duplicate patterns", "[http]") {
  http::Router r;
  REQUIRE(r.add("/", "root", ok_handler()));
  REQUIRE(r.add("/a/{id}", "a", ok_handler()));
  for (const char* bad : {"", "a", "/a//b", "/a/", "/{}", "/{a-b}", "/*/x", "/{r...}/x",
                          "/a/{x}/{x}", "/a/../b", "/a?b", "/a%20", "/{", "/a}b", "/{...}"}) {
    INFO(bad);
    const auto res = r.add(bad, "", ok_handler());
    REQUIRE_FALSE(res);
    CHECK(res.error().code == neco::Errc::invalid_argument);
  }
  const auto dup = r.add("/a/{other}", "", ok_handler());
  REQUIRE_FALSE(dup);
  CHECK(dup.error().code == neco::Errc::already_exists);
  CHECK_FALSE(r.add("/", "", ok_handler()));
  CHECK_FALSE(r.add("/x", "", http::Handler{}));
  // Same path once read-only and once mutating is two routes, not a duplicate.
  CHECK(r.add("/a/{id}", "a write", ok_handler(), true));
  REQUIRE(r.add("/m/*", "", ok_handler()));
  CHECK_FALSE(r.add("/m/{rest...}", "", ok_handler()));
}

TEST_CASE("Router::match prefers literals, then params, then catch-alls", "[http]") {
  http::Router r;
  REQUIRE(r.add("/v1/mysql/status", "", ok_handler()));
  REQUIRE(r.add("/v1/mysql/{cluster}", "", ok_handler()));
  REQUIRE(r.add("/v1/mysql/{cluster}/switchover", "", ok_handler(), true));
  REQUIRE(r.add("/v1/mysql/{rest...}", "", ok_handler()));
  REQUIRE(r.add("/v1/exporter/*", "", ok_handler()));
  REQUIRE(r.add("/v1/exporter", "", ok_handler()));

  CHECK(matched(r, Verb::get, "/v1/mysql/status") == "/v1/mysql/status");
  CHECK(matched(r, Verb::get, "/v1/mysql/main") == "/v1/mysql/{cluster}");
  CHECK(matched(r, Verb::get, "/v1/mysql/main/replicas") == "/v1/mysql/{rest...}");
  CHECK(matched(r, Verb::post, "/v1/mysql/main/switchover") == "/v1/mysql/{cluster}/switchover");
  CHECK(matched(r, Verb::get, "/v1/exporter") == "/v1/exporter");
  CHECK(matched(r, Verb::get, "/v1/exporter/a/b") == "/v1/exporter/*");
  CHECK(matched(r, Verb::get, "/v1") == "-");

  auto m = r.match(Verb::get, "/v1/mysql/main");
  REQUIRE(m.params.size() == 1);
  CHECK(m.params[0] == std::pair<std::string, std::string>{"cluster", "main"});
  m = r.match(Verb::head, "/v1/mysql/a/b/c");
  REQUIRE(m.kind == RouteMatch::Kind::found);
  CHECK(m.params[0] == std::pair<std::string, std::string>{"rest", "a/b/c"});
  m = r.match(Verb::get, "/v1/exporter/x/y");
  CHECK(m.params[0] == std::pair<std::string, std::string>{"*", "x/y"});
}

TEST_CASE("Router::match enforces read-only and mutating methods", "[http]") {
  http::Router r;
  REQUIRE(r.add("/status", "", ok_handler()));
  REQUIRE(r.add("/reload", "", ok_handler(), true));
  REQUIRE(r.add("/item/{id}", "", ok_handler()));
  REQUIRE(r.add("/item/{id}", "", ok_handler(), true));

  CHECK(r.match(Verb::get, "/status").kind == RouteMatch::Kind::found);
  CHECK(r.match(Verb::head, "/status").kind == RouteMatch::Kind::found);
  auto m = r.match(Verb::post, "/status");
  CHECK(m.kind == RouteMatch::Kind::method_not_allowed);
  CHECK(m.allow == "GET, HEAD");
  m = r.match(Verb::get, "/reload");
  CHECK(m.kind == RouteMatch::Kind::method_not_allowed);
  CHECK(m.allow == "POST, PUT, DELETE");
  for (auto v : {Verb::post, Verb::put, Verb::delete_}) {
    CHECK(r.match(v, "/reload").kind == RouteMatch::Kind::found);
  }
  CHECK(r.match(Verb::patch, "/item/1").allow == "GET, HEAD, POST, PUT, DELETE");
  CHECK(r.match(Verb::delete_, "/item/1").route->mutates);
  CHECK_FALSE(r.match(Verb::get, "/item/1").route->mutates);
  CHECK(r.match(Verb::get, "/nothing").kind == RouteMatch::Kind::not_found);
}

TEST_CASE("Router::routes lists every route sorted for /help", "[http]") {
  http::Router r;
  REQUIRE(r.add("/z", "last", ok_handler()));
  REQUIRE(r.add("/a", "first", ok_handler(), true));
  const auto list = r.routes();
  REQUIRE(list.size() == 2);
  CHECK(list[0].path == "/a");
  CHECK(list[0].help == "first");
  CHECK(list[0].mutates);
  CHECK(list[1].path == "/z");
}
