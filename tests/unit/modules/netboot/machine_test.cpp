#include "modules/netboot/machine.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

using namespace neco;
using namespace neco::netboot;
using nlohmann::json;
using S = MachineState;

namespace {

Machine sample() {
  Machine m;
  m.serial = "SN-0001";
  m.rack = 1;
  m.index_in_rack = 5;
  m.role = "worker";
  m.labels = {{"product", "R640"}, {"datacenter", "tokyo1"}};
  m.bmc_type = "iDRAC-9";
  m.register_date = 1700000000;
  m.retire_date = 1896048000;
  m.state = S::healthy;
  m.state_since = 1700000100;
  m.ipv4 = {Interface{0x0a4500c5U, 26, 0x0a4500c1U}, Interface{0x0a450105U, 26, 0x0a450101U}};
  m.bmc = Interface{0x0a481125U, 20, 0x0a481001U};
  return m;
}

json spec_json() {
  return json{{"serial", "SN-0001"},
              {"rack", 1},
              {"role", "worker"},
              {"bmc_type", "IPMI-2.0"},
              {"labels", {{"product", "R640"}}}};
}

}  // namespace

TEST_CASE("Every state pair against sabakan's transition table", "[netboot][machine]") {
  // Written out pair by pair from sabakan's docs/lifecycle.md.
  const std::set<std::pair<S, S>> allowed = {
      {S::uninitialized, S::healthy},  {S::uninitialized, S::retiring},
      {S::healthy, S::unhealthy},      {S::healthy, S::unreachable},
      {S::healthy, S::updating},       {S::healthy, S::retiring},
      {S::unhealthy, S::healthy},      {S::unhealthy, S::unreachable},
      {S::unhealthy, S::updating},     {S::unhealthy, S::retiring},
      {S::unreachable, S::healthy},    {S::unreachable, S::unhealthy},
      {S::unreachable, S::updating},   {S::unreachable, S::retiring},
      {S::updating, S::uninitialized}, {S::retiring, S::retired},
      {S::retired, S::uninitialized},
  };
  int checked = 0;
  for (const auto from : kAllStates) {
    for (const auto to : kAllStates) {
      INFO(to_string(from) << " -> " << to_string(to));
      const bool expect = allowed.contains({from, to});
      CHECK(transition_allowed(from, to) == expect);
      auto r = check_transition(from, to);
      CHECK(r.has_value() == expect);
      if (!expect) {
        CHECK(r.error().code == Errc::failed_precondition);
        CHECK_THAT(r.error().message, Catch::Contains(std::string(to_string(from))));
        CHECK_THAT(r.error().message, Catch::Contains(std::string(to_string(to))));
        // The message lists every allowed target.
        for (const auto ok : allowed_transitions(from)) {
          CHECK_THAT(r.error().message, Catch::Contains(std::string(to_string(ok))));
        }
      }
      ++checked;
    }
  }
  CHECK(checked == 49);
  auto r = check_transition(S::healthy, S::retired);
  REQUIRE_FALSE(r);
  CHECK(r.error().message ==
        "a machine in state healthy cannot become retired; from healthy it may become: "
        "unhealthy, unreachable, updating, retiring");
}

TEST_CASE("State names", "[netboot][machine]") {
  for (const auto s : kAllStates)
    CHECK(parse_machine_state(to_string(s)) == s);
  CHECK(to_string(S::unreachable) == "unreachable");
  CHECK_FALSE(parse_machine_state("Healthy"));
  CHECK_FALSE(parse_machine_state(""));
}

TEST_CASE("MachineSpec from JSON", "[netboot][machine]") {
  auto spec = machine_spec_from_json(spec_json());
  if (!spec) FAIL(spec.error().message);
  CHECK(spec->serial == "SN-0001");
  CHECK(spec->rack == 1);
  CHECK(spec->role == "worker");
  CHECK(spec->bmc_type == "IPMI-2.0");
  CHECK(spec->labels == std::map<std::string, std::string>{{"product", "R640"}});
  CHECK(spec->retire_date == 0);
  auto back = machine_spec_from_json(to_json(*spec));
  REQUIRE(back);
  CHECK(*back == *spec);

  // Dates: unix seconds or RFC 3339 UTC.
  auto dated = spec_json();
  dated["retire_date"] = "2030-01-31";
  CHECK(machine_spec_from_json(dated)->retire_date == 1896048000);
  dated["retire_date"] = "2030-01-31T12:34:56Z";
  CHECK(machine_spec_from_json(dated)->retire_date == 1896093296);
  dated["retire_date"] = 1896048000;
  CHECK(machine_spec_from_json(dated)->retire_date == 1896048000);

  const auto refused = [](const json& j, const char* needle) {
    INFO(j.dump());
    auto r = machine_spec_from_json(j);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK_THAT(r.error().message, Catch::Contains(needle));
  };
  const auto with = [](const char* key, json value) {
    auto j = spec_json();
    j[key] = std::move(value);
    return j;
  };
  auto no_serial = spec_json();
  no_serial.erase("serial");
  refused(no_serial, "'serial' is required");
  refused(with("serial", ""), "serial");
  refused(with("serial", "a/b"), "serial: 'a/b'");
  refused(with("serial", "-lead"), "serial");
  refused(with("serial", std::string(65, 'a')), "serial");
  refused(with("serial", "a\nb"), "serial: 'a?b'");
  refused(with("rack", -1), "'rack'");
  refused(with("rack", "1"), "'rack'");
  refused(with("role", ""), "role");
  refused(with("role", "Worker!"), "role");
  refused(with("bmc_type", ""), "bmc_type");
  refused(with("bmc_type", "iDRAC 9"), "bmc_type");
  refused(with("labels", {{"ok", 1}}), "labels");
  refused(with("labels", {{"bad name", "v"}}), "labels: name 'bad name'");
  refused(with("labels", {{"name", "-v"}}), "labels: value '-v'");
  refused(with("labels", json::array()), "labels");
  refused(with("retire_date", "2030-02-30"), "retire_date");
  refused(with("retire_date", "2030-1-31"), "retire_date");
  refused(with("retire_date", "2030-01-31T24:00:00Z"), "retire_date");
  refused(with("retire_date", -5), "retire_date");
  refused(with("retire_date", 1.5), "retire_date");
  // Fields the inventory computes are not accepted.
  refused(with("index_in_rack", 4), "unknown key 'index_in_rack'");
  refused(with("state", "healthy"), "unknown key 'state'");
  refused(json::array(), "expected a JSON object");
  // An empty label value is allowed (as Kubernetes).
  CHECK(machine_spec_from_json(with("labels", {{"flag", ""}})));
}

TEST_CASE("Machine JSON round trip", "[netboot][machine]") {
  const auto m = sample();
  const auto j = to_json(m);
  CHECK(j["state"] == "healthy");
  CHECK(j["index_in_rack"] == 5);
  CHECK(j["ipv4"][0] == json{{"address", "10.69.0.197"},
                             {"netmask", "255.255.255.192"},
                             {"mask_bits", 26},
                             {"gateway", "10.69.0.193"}});
  CHECK(j["bmc"]["address"] == "10.72.17.37");
  auto back = machine_from_json(json::parse(j.dump()));
  REQUIRE(back);
  CHECK(*back == m);

  auto bad = j;
  bad["state"] = "broken";
  CHECK_THAT(machine_from_json(bad).error().message, Catch::Contains("unknown state 'broken'"));
  bad = j;
  bad.erase("bmc");
  CHECK_FALSE(machine_from_json(bad));
  bad = j;
  bad["ipv4"][0]["address"] = "10.69.0";
  CHECK_FALSE(machine_from_json(bad));
  bad = j;
  bad["extra"] = 1;
  CHECK_FALSE(machine_from_json(bad));
}

TEST_CASE("Machine updates", "[netboot][machine]") {
  const auto m = sample();
  auto u = machine_update_from_json(
      json{{"labels", {{"product", "R650"}, {"datacenter", nullptr}, {"absent", nullptr}}},
           {"retire_date", "2031-01-01"}});
  REQUIRE(u);
  auto next = apply(m, *u);
  REQUIRE(next);
  CHECK(next->labels == std::map<std::string, std::string>{{"product", "R650"}});
  CHECK(next->retire_date == 1924992000);
  CHECK(next->state == m.state);

  CHECK_FALSE(machine_update_from_json(json{{"labels", {{"x", 1}}}}));
  CHECK_FALSE(machine_update_from_json(json{{"state", "healthy"}}));
  CHECK_FALSE(machine_update_from_json(json{{"retire_date", "soon"}}));
  auto bad_label = machine_update_from_json(json{{"labels", {{"a b", "c"}}}});
  REQUIRE(bad_label);  // names are checked when applied
  auto applied = apply(m, *bad_label);
  REQUIRE_FALSE(applied);
  CHECK(applied.error().code == Errc::invalid_argument);

  MachineUpdate many;
  for (int i = 0; i < 70; ++i)
    many.labels["l" + std::to_string(i)] = "v";
  CHECK_THAT(apply(m, many).error().message, Catch::Contains("at most 64"));
}

TEST_CASE("Machine filters", "[netboot][machine]") {
  const auto m = sample();
  CHECK(MachineFilter{}.matches(m));
  auto f = machine_filter_from_params({{"rack", "1"},
                                       {"role", "worker"},
                                       {"state", "healthy"},
                                       {"labels", "product=R640,datacenter=tokyo1"},
                                       {"address", "10.69.1.5"},
                                       {"serial", "SN-0001"}});
  REQUIRE(f);
  CHECK(f->matches(m));
  CHECK(f->labels.size() == 2);
  CHECK(machine_filter_from_params({{"address", "10.72.17.37"}})->matches(m));  // the BMC
  CHECK_FALSE(machine_filter_from_params({{"address", "10.72.17.38"}})->matches(m));
  CHECK_FALSE(machine_filter_from_params({{"rack", "2"}})->matches(m));
  CHECK_FALSE(machine_filter_from_params({{"state", "retired"}})->matches(m));
  CHECK_FALSE(machine_filter_from_params({{"labels", "product=R650"}})->matches(m));
  CHECK_FALSE(machine_filter_from_params({{"labels", "missing="}})->matches(m));
  CHECK_FALSE(machine_filter_from_params({{"role", "boot"}})->matches(m));

  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{{"rack", "x"},
                                                                             {"rack", ""},
                                                                             {"rack", "-1"},
                                                                             {"state", "fine"},
                                                                             {"address", "10.1"},
                                                                             {"labels", "novalue"},
                                                                             {"colour", "red"}}) {
    INFO(k << "=" << v);
    auto r = machine_filter_from_params({{k, v}});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
  }
}
