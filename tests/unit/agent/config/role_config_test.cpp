#include <catch2/catch.hpp>

#include "agent/config/role_config.hpp"

using neco::config::parse_role_text;

namespace {

std::string error_of(const std::string& text) {
  auto r = parse_role_text(text, "role.yaml");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == neco::Errc::invalid_argument);
  return r.error().message;
}

}  // namespace

TEST_CASE("a minimal role file takes every default", "[config]") {
  auto r = parse_role_text("node:\n  name: n1\n", "role.yaml");
  REQUIRE(r.has_value());
  CHECK(r->core.node.name == "n1");
  CHECK_FALSE(r->core.controller);
  CHECK(r->core.admin.address == "127.0.0.1");
  CHECK(r->core.admin.port == 9180);
  CHECK(r->core.metrics.port == 9181);
  CHECK(r->core.state_dir == "/var/lib/neco");
  CHECK(r->core.store.election_ttl == std::chrono::seconds(10));
  CHECK(r->modules.empty());
}

TEST_CASE("every shipped example role file is valid", "[config]") {
  for (const char* name : {"single-node", "controller", "node"}) {
    INFO(name);
    auto r = neco::config::load_role_file(std::string(NECO_SOURCE_ROOT) + "/config/roles/" + name +
                                          ".yaml");
    REQUIRE(r.has_value());
  }
}

TEST_CASE("an unknown key is reported at its line and column", "[config]") {
  const auto msg = error_of("node:\n  name: n1\nadmin:\n  prot: 9000\n");
  CHECK(msg.rfind("role.yaml:4:3: unknown key 'admin.prot'", 0) == 0);
  CHECK(msg.find("known keys: address, port") != std::string::npos);
}

TEST_CASE("a wrong type is reported with what was expected", "[config]") {
  CHECK(error_of("node:\n  name: n1\ncontroller: maybe\n") ==
        "role.yaml:3:13: controller: expected a boolean (true or false), got the value 'maybe'");
  CHECK(error_of("node:\n  name: n1\nadmin:\n  port: [1]\n") ==
        "role.yaml:4:9: admin.port: expected an integer, got a list");
  // A quoted number is a string in YAML; refusing it catches templating mistakes.
  CHECK(error_of("node:\n  name: n1\nadmin:\n  port: \"80\"\n") ==
        "role.yaml:4:9: admin.port: expected an integer, got the value '80'");
  // YAML 1.1 booleans are not accepted.
  CHECK(error_of("node:\n  name: n1\ncontroller: yes\n").find("expected a boolean") !=
        std::string::npos);
}

TEST_CASE("out-of-range values name the range", "[config]") {
  CHECK(error_of("node:\n  name: n1\nadmin:\n  port: 70000\n") ==
        "role.yaml:4:9: admin.port: 70000 is out of range 1..65535");
  CHECK(error_of("node:\n  name: n1\nadmin:\n  port: 0\n") ==
        "role.yaml:4:9: admin.port: 0 is out of range 1..65535");
  CHECK(error_of("node:\n  name: n1\ncontroller: true\nstore:\n  election_ttl: 500ms\n") ==
        "role.yaml:5:17: store.election_ttl: 500ms is out of range 1s..5m");
  CHECK(error_of("node:\n  name: n1\nlog_level: loud\n") ==
        "role.yaml:3:12: log_level: 'loud' is not one of: error, warning, info, debug");
}

TEST_CASE("missing required fields are reported", "[config]") {
  CHECK(error_of("controller: true\n") == "role.yaml:1:1: missing required field 'node'");
  CHECK(error_of("node:\n  labels: {a: b}\n") ==
        "role.yaml:2:3: missing required field 'node.name'");
  CHECK(error_of("") ==
        "role.yaml:1:1: the role file is empty; it needs at least 'node: {name: ...}'");
}

TEST_CASE("every problem of a file is reported at once", "[config]") {
  const auto msg = error_of("node:\n  name: n1\nadmin:\n  port: 70000\n  prot: 1\nworkers: x\n");
  CHECK(msg.find("role.yaml:4:9:") != std::string::npos);
  CHECK(msg.find("role.yaml:5:3: unknown key 'admin.prot'") != std::string::npos);
  CHECK(msg.find("role.yaml:6:10: workers: expected an integer") != std::string::npos);
}

TEST_CASE("YAML syntax errors carry a position", "[config]") {
  const auto msg = error_of("node:\n  name: [n1\n");
  CHECK(msg.rfind("role.yaml:", 0) == 0);
  CHECK(msg.find("YAML syntax error") != std::string::npos);
}

TEST_CASE("duplicate keys are refused", "[config]") {
  CHECK(error_of("node:\n  name: n1\nlog_level: info\nlog_level: debug\n") ==
        "role.yaml:4:1: duplicate key 'log_level'");
  CHECK(error_of("node:\n  name: n1\nmodules:\n  a: {}\n  a: {}\n") ==
        "role.yaml:5:3: duplicate module 'a'");
}

TEST_CASE("node names and paths are checked", "[config]") {
  CHECK(error_of("node:\n  name: Bad_Name\n").find("node.name: 'Bad_Name' may only hold") !=
        std::string::npos);
  CHECK(error_of("node:\n  name: n1\nstate_dir: relative/dir\n") ==
        "role.yaml:3:12: state_dir: 'relative/dir' must be an absolute path");
  CHECK(error_of("node:\n  name: n1\nadmin:\n  address: 127.0.0.1:80\n")
            .find("looks like host:port") != std::string::npos);
}

TEST_CASE("only controllers have a store", "[config]") {
  CHECK(error_of("node:\n  name: n1\nstore:\n  backend: sqlite\n")
            .find("role.yaml:4:3: store: only controllers have a store") != std::string::npos);
  CHECK(error_of("node:\n  name: n1\ncontroller: true\nstore:\n  backend: mysql\n") ==
        "role.yaml:5:12: store.backend: 'mysql' is not one of: sqlite, etcd");
}

TEST_CASE("the etcd backend needs endpoints as URLs, and cert with key", "[config]") {
  CHECK(error_of("node:\n  name: n1\ncontroller: true\nstore:\n  backend: etcd\n") ==
        "role.yaml:5:12: store.etcd.endpoints: the etcd backend needs at least one endpoint");
  CHECK(error_of("node:\n  name: n1\ncontroller: true\nstore:\n  backend: etcd\n  etcd:\n"
                 "    endpoints: [127.0.0.1:2379]\n")
            .find("must be a URL like") != std::string::npos);
  CHECK(error_of("node:\n  name: n1\ncontroller: true\nstore:\n  backend: etcd\n  etcd:\n"
                 "    endpoints: [http://127.0.0.1:2379]\n    cert_file: /etc/c.pem\n")
            .find("cert_file and key_file go together") != std::string::npos);
  auto r = parse_role_text(
      "node:\n  name: n1\ncontroller: true\nstore:\n  backend: etcd\n  etcd:\n"
      "    endpoints: [http://10.0.0.1:2379, https://10.0.0.2:2379]\n"
      "    request_timeout: 2s\n",
      "role.yaml");
  REQUIRE(r.has_value());
  CHECK(r->core.store.etcd.endpoints.size() == 2);
  CHECK(r->core.store.etcd.request_timeout == std::chrono::seconds(2));
}

TEST_CASE("cluster: controllers serve, nodes join with a pinned CA", "[config]") {
  const std::string fp = "sha256:" + std::string(64, 'a');
  auto node = parse_role_text(
      "node:\n  name: n1\ncluster:\n  join:\n    controllers: "
      "[https://10.0.0.1:9443]\n    token: t\n    ca_fingerprint: " +
          fp + "\n",
      "role.yaml");
  REQUIRE(node.has_value());
  CHECK(node->core.cluster.join.controllers.front() == "https://10.0.0.1:9443");
  CHECK(neco::config::dump_core(node->core)["cluster"]["join"]["token"] == "<redacted>");
  CHECK(error_of("node:\n  name: n1\ncluster:\n  join:\n    controllers: "
                 "[https://10.0.0.1:9443]\n")
            .find("ca_fingerprint is required") != std::string::npos);
  CHECK(error_of("node:\n  name: n1\ncluster:\n  join:\n    ca_fingerprint: sha256:abc\n")
            .find("must be sha256: and 64 lowercase hex digits") != std::string::npos);
  CHECK(error_of("node:\n  name: n1\ncontroller: true\ncluster:\n  join:\n    controllers: "
                 "[https://10.0.0.1:9443]\n    ca_fingerprint: " +
                 fp + "\n")
            .find("controllers do not join") != std::string::npos);
  CHECK(error_of("node:\n  name: n1\ncluster:\n  api:\n    port: 9443\n")
            .find("only controllers serve the cluster API") != std::string::npos);
  CHECK(error_of("node:\n  name: n1\ncluster:\n  unreachable_after: 1\n")
            .find("cluster.unreachable_after") != std::string::npos);
}

TEST_CASE("module sections are kept for their modules, in file order", "[config]") {
  auto r = parse_role_text("node:\n  name: n1\nmodules:\n  zeta: {a: 1}\n  alpha:\n", "role.yaml");
  REQUIRE(r.has_value());
  REQUIRE(r->modules.size() == 2);
  CHECK(r->modules[0].name == "zeta");
  CHECK(r->modules[0].node["a"].Scalar() == "1");
  CHECK(r->modules[1].name == "alpha");
  CHECK(r->modules[1].node.IsNull());
  CHECK(error_of("node:\n  name: n1\nmodules: [a]\n").find("modules: expected a mapping") !=
        std::string::npos);
}

TEST_CASE("durations need a unit", "[config]") {
  using neco::config::parse_duration;
  CHECK(parse_duration("10s") == std::chrono::seconds(10));
  CHECK(parse_duration("1h30m") == std::chrono::minutes(90));
  CHECK(parse_duration("250ms") == std::chrono::milliseconds(250));
  CHECK_FALSE(parse_duration("10").has_value());
  CHECK_FALSE(parse_duration("").has_value());
  CHECK_FALSE(parse_duration("-1s").has_value());
  CHECK_FALSE(parse_duration("99999999999999999999h").has_value());
  CHECK(neco::config::format_duration(std::chrono::minutes(90)) == "90m");
}

TEST_CASE("dumps redact secrets and documents list every field", "[config]") {
  struct Creds {
    std::string user = "u";
    std::string password;
  };
  neco::config::Schema<Creds> s;
  s.field("user", &Creds::user, "user name");
  s.field("password", &Creds::password, "password", {.secret = true});
  Creds c;
  c.password = "hunter2";
  const auto j = s.dump(c);
  CHECK(j["user"] == "u");
  CHECK(j["password"] == "<redacted>");
  CHECK(j.dump().find("hunter2") == std::string::npos);
  std::vector<neco::config::FieldDoc> docs;
  s.document("creds", Creds{}, docs);
  REQUIRE(docs.size() == 2);
  CHECK(docs[0].key == "creds.user");
  CHECK(docs[0].default_value == "u");

  std::vector<neco::config::FieldDoc> core;
  neco::config::core_schema().document("", neco::config::CoreConfig{}, core);
  CHECK(core.size() > 15);
}

TEST_CASE("restart-only changes are told apart from live ones", "[config]") {
  neco::config::CoreConfig a;
  a.node.name = "n1";
  auto b = a;
  b.log_level = "debug";
  b.node.labels["rack"] = "1";
  CHECK(neco::config::restart_only_changes(a, b).empty());
  b.admin.port = 1234;
  b.node.name = "n2";
  const auto changed = neco::config::restart_only_changes(a, b);
  CHECK(changed == std::vector<std::string>{"node.name", "admin"});
}

TEST_CASE("strings must be valid UTF-8", "[config]") {
  // A YAML escape is a code point, not a byte: "\xff" is U+00FF, which is fine.
  CHECK(parse_role_text("node:\n  name: n1\n  labels: {rack: \"\\xff\"}\n", "r").has_value());
  CHECK(error_of("node:\n  name: n1\nstate_dir: /v\xff\n") ==
        "role.yaml:3:12: state_dir: not valid UTF-8");
  CHECK(error_of("node:\n  name: n1\n  labels: {\"r\xc3\": x}\n") ==
        "role.yaml:3:12: node.labels: a key is not valid UTF-8");
  CHECK(error_of("node:\n  name: n1\nstate_dir: /v\xed\xa0\x80\n").find("not valid UTF-8") !=
        std::string::npos);  // an encoded surrogate
  auto ok = parse_role_text(
      "node:\n  name: n1\n  labels: {city: \"K\xc3\xb8"
      "benhavn\"}\n",
      "r");
  CHECK(ok.has_value());
}
