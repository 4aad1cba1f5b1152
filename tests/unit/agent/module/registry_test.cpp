#include <catch2/catch.hpp>

#include "agent/module/context.hpp"
#include "agent/module/registry.hpp"

namespace {

// Registered through the same one-line macro real modules use.
class AlphaModule final : public neco::Module {
 public:
  std::string_view name() const override { return "alpha"; }
  neco::Expected<void> configure(const neco::config::Section&) override { return {}; }
  neco::Expected<void> start(neco::ModuleContext&) override { return {}; }
  void stop() override {}
  neco::Health health() const override { return {neco::HealthState::healthy, ""}; }
  nlohmann::json effective_config() const override { return nlohmann::json::object(); }
};

class ZuluModule final : public neco::Module {
 public:
  std::string_view name() const override { return "zulu"; }
  neco::Expected<void> configure(const neco::config::Section&) override { return {}; }
  neco::Expected<void> start(neco::ModuleContext&) override { return {}; }
  void stop() override {}
  neco::Health health() const override { return {}; }
  nlohmann::json effective_config() const override { return nullptr; }
};

}  // namespace

NECO_REGISTER_MODULE(zulu, ZuluModule);
NECO_REGISTER_MODULE(alpha, AlphaModule);

TEST_CASE("registration lines record factories; names come back sorted", "[module]") {
  auto& reg = neco::ModuleRegistry::instance();
  CHECK(reg.check().has_value());
  const auto names = reg.names();
  REQUIRE(names.size() >= 2);
  CHECK(std::is_sorted(names.begin(), names.end()));
  CHECK(reg.contains("alpha"));
  auto m = reg.create("alpha");
  REQUIRE(m.has_value());
  CHECK((*m)->name() == "alpha");
  // Each create() builds a fresh instance.
  auto m2 = reg.create("alpha");
  REQUIRE(m2.has_value());
  CHECK(m->get() != m2->get());
}

TEST_CASE("an unknown module lists the compiled-in ones", "[module]") {
  auto m = neco::ModuleRegistry::instance().create("nope");
  REQUIRE_FALSE(m.has_value());
  CHECK(m.error().code == neco::Errc::not_found);
  CHECK(m.error().message.find("unknown module 'nope'") != std::string::npos);
  CHECK(m.error().message.find("alpha") != std::string::npos);
}

TEST_CASE("a duplicate registration is fatal at check time", "[module]") {
  neco::ModuleRegistry reg;
  reg.add("x", []() -> std::unique_ptr<neco::Module> { return std::make_unique<AlphaModule>(); });
  CHECK(reg.check().has_value());
  reg.add("x", []() -> std::unique_ptr<neco::Module> { return std::make_unique<ZuluModule>(); });
  auto ok = reg.check();
  REQUIRE_FALSE(ok.has_value());
  CHECK(ok.error().message.find("registered more than once: x") != std::string::npos);
}

TEST_CASE("module routes live under /v1/<module>/", "[module]") {
  neco::http::Router router;
  neco::ModuleRoutes routes(router, "alpha");
  auto handler = [](neco::http::Request&) -> boost::asio::awaitable<neco::http::Response> {
    co_return neco::http::Response::json({{"ok", true}});
  };
  REQUIRE(routes.add("items/{id}", "one item", handler).has_value());
  REQUIRE(routes.add("", "module root", handler).has_value());
  CHECK(router.match(neco::http::Verb::get, "/v1/alpha/items/7").kind ==
        neco::http::RouteMatch::Kind::found);
  CHECK(router.match(neco::http::Verb::get, "/v1/alpha").kind ==
        neco::http::RouteMatch::Kind::found);
  CHECK(router.match(neco::http::Verb::get, "/items/7").kind ==
        neco::http::RouteMatch::Kind::not_found);
}
