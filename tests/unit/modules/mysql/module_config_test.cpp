// Unit tests of the mysql module's role-file section: a full cluster parses into the spec the
// loop runs (with optional controller-side addresses); validate()'s refusals (two primaries,
// duplicate instances or controller addresses, no instances) and the schema's (unknown keys, bad
// ranges) come out at configure time naming the field path, so `neco config check` rejects
// them; cluster names are unique; the store keys. The node side (modules.mysql.local): defaults
// resolved, and each bad input refused naming its field.
#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>
#include <string>

#include "agent/config/role_config.hpp"
#include "modules/mysql/mysql_module.hpp"

namespace {

using neco::Expected;
namespace my = neco::mysql;

Expected<my::MysqlConfig> parse(const std::string& yaml) {
  const neco::config::ModuleSection ms{"mysql", YAML::Load(yaml), yaml, {}};
  return my::parse_config(neco::config::Section(ms, "role.yaml"));
}

std::string cluster(const std::string& instances, const std::string& extra = "") {
  return "clusters:\n"
         "  - name: c1\n"
         "    instances:\n" +
         instances +
         "    credentials: {admin_user: a, admin_password_file: /pa, repl_user: r, "
         "repl_password_file: /pr}\n" +
         extra;
}

constexpr const char* kThree =
    "      - {name: m0, host: 10.0.0.1, port: 3306, primary: true}\n"
    "      - {name: m1, host: 10.0.0.2}\n"
    "      - {name: m2, host: 10.0.0.3, port: 3307}\n";

std::string error_of(const std::string& yaml) {
  auto c = parse(yaml);
  REQUIRE_FALSE(c.has_value());
  return c.error().message;
}

}  // namespace

TEST_CASE("a cluster section becomes the spec the loop runs", "[mysql][config]") {
  auto c = parse(cluster(kThree,
                         "    policy: {failover: false, failure_confirm: 1500ms, "
                         "connect_timeout: 2s, anti_flap_window: 5m}\n"));
  REQUIRE(c.has_value());
  REQUIRE(c->clusters.size() == 1);
  auto spec = my::cluster_spec(c->clusters[0], "modules.mysql.clusters[0]");
  REQUIRE(spec.has_value());
  CHECK(spec->name == "c1");
  REQUIRE(spec->instances.size() == 3);
  CHECK(spec->declared_primary() == "m0");
  CHECK(spec->instances[1].port == 3306);
  CHECK(spec->instances[2].port == 3307);
  CHECK_FALSE(spec->policy.failover);
  CHECK(spec->policy.failure_confirm == std::chrono::milliseconds(1500));
  CHECK(spec->policy.connect_timeout == std::chrono::seconds(2));
  CHECK(c->clusters[0].policy.anti_flap_window == std::chrono::minutes(5));
  CHECK(c->clusters[0].credentials.admin_password_file == "/pa");
  // The effective config names the files, never a password.
  const auto dumped = my::mysql_schema().dump(*c).dump();
  CHECK(dumped.find("/pr") != std::string::npos);
}

TEST_CASE("the controller may reach an instance at another address than the replicas",
          "[mysql][config]") {
  auto c =
      parse(cluster("      - {name: m0, host: 10.0.0.1, primary: true, admin_host: mgmt-0, "
                    "admin_port: 13306}\n"
                    "      - {name: m1, host: 10.0.0.2, admin_port: 13307}\n"
                    "      - {name: m2, host: 10.0.0.3}\n"));
  REQUIRE(c.has_value());
  auto spec = my::cluster_spec(c->clusters[0], "modules.mysql.clusters[0]");
  REQUIRE(spec.has_value());
  CHECK(spec->instances[0].controller_host() == "mgmt-0");
  CHECK(spec->instances[0].controller_port() == 13306);
  CHECK(spec->instances[0].host == "10.0.0.1");
  CHECK(spec->instances[0].port == 3306);
  CHECK(spec->instances[1].controller_host() == "10.0.0.2");
  CHECK(spec->instances[1].controller_port() == 13307);
  CHECK(spec->instances[2].controller_host() == "10.0.0.3");
  CHECK(spec->instances[2].controller_port() == 3306);

  CHECK(error_of(cluster("      - {name: m0, host: h0, primary: true, admin_port: 70000}\n"))
            .find("admin_port") != std::string::npos);
  CHECK(error_of(cluster("      - {name: m0, host: h0, primary: true, admin_port: -1}\n"))
            .find("admin_port") != std::string::npos);
  // Empty and 0 are "absent" (what a dumped definition holds): the controller uses host:port.
  const auto absent =
      parse(cluster("      - {name: m0, host: h0, port: 3307, primary: true, admin_host: \"\", "
                    "admin_port: 0}\n"));
  REQUIRE(absent);
  const auto absent_spec = my::cluster_spec(absent->clusters.at(0), "c");
  REQUIRE(absent_spec);
  CHECK(absent_spec->instances[0].controller_host() == "h0");
  CHECK(absent_spec->instances[0].controller_port() == 3307);
  const auto same =
      error_of(cluster("      - {name: m0, host: h0, primary: true, admin_host: p}\n"
                       "      - {name: m1, host: h1, admin_host: p}\n"));
  CHECK(same.find("modules.mysql.clusters[0]") != std::string::npos);
  CHECK(same.find("duplicates the controller address p:3306") != std::string::npos);
}

TEST_CASE("no clusters is a valid (idle) section", "[mysql][config]") {
  auto c = parse("{}");
  REQUIRE(c.has_value());
  CHECK(c->clusters.empty());
}

TEST_CASE("validate() refusals surface at configure with the field path", "[mysql][config]") {
  const auto two =
      error_of(cluster("      - {name: m0, host: h0, primary: true}\n"
                       "      - {name: m1, host: h1, primary: true}\n"));
  CHECK(two.find("modules.mysql.clusters[0]") != std::string::npos);
  CHECK(two.find("primar") != std::string::npos);

  const auto dup =
      error_of(cluster("      - {name: m0, host: h0, primary: true}\n"
                       "      - {name: m0, host: h1}\n"));
  CHECK(dup.find("modules.mysql.clusters[0]") != std::string::npos);
  CHECK(dup.find("m0") != std::string::npos);

  const auto none = error_of(cluster("      []\n"));
  CHECK(none.find("modules.mysql.clusters[0]") != std::string::npos);
  CHECK(none.find("instances") != std::string::npos);

  const auto no_primary = error_of(cluster("      - {name: m0, host: h0}\n"));
  CHECK(no_primary.find("primar") != std::string::npos);
}

TEST_CASE("the schema refuses unknown keys, bad ports and missing credentials", "[mysql][config]") {
  CHECK(error_of(cluster(kThree, "    polcy: {}\n")).find("polcy") != std::string::npos);
  CHECK(error_of(cluster("      - {name: m0, host: h0, port: 0, primary: true}\n")).find("port") !=
        std::string::npos);
  CHECK(error_of(cluster(kThree, "    policy: {connect_timeout: 0s}\n")).find("connect_timeout") !=
        std::string::npos);
  const auto missing = error_of(std::string("clusters:\n  - name: c1\n    instances:\n") + kThree +
                                "    credentials: {admin_user: a}\n");
  CHECK(missing.find("admin_password_file") != std::string::npos);
}

TEST_CASE("cluster names are unique", "[mysql][config]") {
  const std::string one = cluster(kThree);
  const std::string twice = one + one.substr(std::string("clusters:\n").size());
  const auto e = error_of(twice);
  CHECK(e.find("modules.mysql.clusters[1].name") != std::string::npos);
}

TEST_CASE("store keys live under /neco/mysql/clusters/<name>/", "[mysql][config]") {
  CHECK(my::memory_key("c1") == "/neco/mysql/clusters/c1/memory");
  CHECK(my::paused_key("c1") == "/neco/mysql/clusters/c1/paused");
  CHECK(my::last_failover_key("c1") == "/neco/mysql/clusters/c1/last_failover");
}

namespace {

std::string local(const std::string& fields) {
  return "local:\n"
         "  server_id: 7\n"
         "  datadir: /var/lib/neco-mysql/data\n"
         "  socket: /run/neco-mysql/mariadbd.sock\n"
         "  option_file: /etc/neco/mariadbd.cnf\n" +
         fields;
}

}  // namespace

TEST_CASE("the local section: fields, defaults and the option file it renders",
          "[mysql][config][local]") {
  auto none = parse("{}");
  REQUIRE(none.has_value());
  CHECK_FALSE(none->local.present);

  auto c =
      parse(local("  port: 3307\n  gtid_domain_id: 2\n  slave_net_timeout: 6s\n"
                  "  start: true\n  mariadbd: /bin/true\n  os_user: root\n"
                  "  admin_user: health\n  admin_password_file: /etc/neco/health.pw\n"));
  REQUIRE(c.has_value());
  CHECK(c->local.present);
  CHECK(c->clusters.empty());
  auto spec = my::local_spec(c->local, "modules.mysql.local");
  REQUIRE(spec.has_value());
  CHECK(spec->server.server_id == 7);
  CHECK(spec->server.port == 3307);
  CHECK(spec->server.gtid_domain_id == 2);
  CHECK(spec->server.slave_net_timeout_s == 6);
  CHECK(spec->start);
  CHECK(spec->mariadbd == "/bin/true");
  CHECK(spec->pid_file == "/var/lib/neco-mysql/data/mariadbd.pid");
  CHECK(spec->log_file == "/var/lib/neco-mysql/mariadbd.log");
  CHECK(spec->option_file == "/etc/neco/mariadbd.cnf");
  CHECK(spec->admin_user == "health");
  CHECK(spec->health_interval == std::chrono::seconds(2));
  auto text = neco::mysql::render_server_config(spec->server);
  REQUIRE(text.has_value());
  CHECK_THAT(*text, Catch::Contains("server_id = 7\n") && Catch::Contains("port = 3307\n") &&
                        Catch::Contains("init_rpl_role = SLAVE\n") &&
                        Catch::Contains("slave_net_timeout = 6\n"));

  // start: false needs no binary at all.
  auto passive = parse(local("  mariadbd: /nonexistent/mariadbd\n"));
  REQUIRE(passive.has_value());
  CHECK(my::local_spec(passive->local, "modules.mysql.local").has_value());
}

TEST_CASE("the local section refuses bad input naming the field", "[mysql][config][local]") {
  CHECK_THAT(error_of("local: {datadir: /d, socket: /s, option_file: /o}\n"),
             Catch::Contains("modules.mysql.local.server_id: 0 is not allowed"));
  CHECK_THAT(error_of(local("  port: 0\n")), Catch::Contains("modules.mysql.local.port"));
  CHECK_THAT(error_of("local: {server_id: 0, datadir: /d, socket: /s, option_file: /o}\n"),
             Catch::Contains("modules.mysql.local.server_id"));
  CHECK_THAT(error_of("local: {server_id: 1, datadir: var/lib/mysql, socket: /s, option_file: "
                      "/o}\n"),
             Catch::Contains("modules.mysql.local.datadir \"var/lib/mysql\" is not an absolute "
                             "path"));
  CHECK_THAT(error_of("local: {server_id: 1, socket: /s, option_file: /o}\n"),
             Catch::Contains("modules.mysql.local.datadir: required"));
  CHECK_THAT(error_of("local: {server_id: 1, datadir: /d, option_file: /o}\n"),
             Catch::Contains("modules.mysql.local.socket: required"));
  CHECK_THAT(error_of("local: {server_id: 1, datadir: /d, socket: /s}\n"),
             Catch::Contains("modules.mysql.local.option_file: required"));
  CHECK_THAT(error_of("local: {server_id: 1, datadir: /, socket: /s, option_file: /o}\n"),
             Catch::Contains("modules.mysql.local.datadir: \"/\" cannot be the root"));
  CHECK_THAT(error_of(local("  start: true\n  mariadbd: /nonexistent/mariadbd\n")),
             Catch::Contains("modules.mysql.local.mariadbd \"/nonexistent/mariadbd\" is not an "
                             "executable file"));
  CHECK_THAT(error_of(local("  start: true\n  mariadbd: /etc/passwd\n")),
             Catch::Contains("is not an executable file"));
  CHECK_THAT(error_of(local("  start: true\n  mariadbd: bin/mariadbd\n")),
             Catch::Contains("modules.mysql.local.mariadbd \"bin/mariadbd\" is not an absolute"));
  CHECK_THAT(error_of(local("  start: true\n  mariadbd: /bin/true\n  initialize: true\n"
                            "  install_db: /nonexistent/install-db\n")),
             Catch::Contains("modules.mysql.local.install_db"));
  CHECK_THAT(error_of(local("  initialize: true\n")),
             Catch::Contains("modules.mysql.local.initialize: needs start: true"));
  CHECK_THAT(error_of(local("  admin_user: health\n")),
             Catch::Contains("modules.mysql.local.admin_password_file: required with admin_user"));
  CHECK_THAT(error_of(local("  admin_password_file: relative.pw\n  admin_user: x\n")),
             Catch::Contains("modules.mysql.local.admin_password_file: \"relative.pw\" is not an "
                             "absolute path"));
  CHECK_THAT(error_of("local: {server_id: 1, datadir: /d, socket: /run/x y.sock, option_file: "
                      "/o}\n"),
             Catch::Contains("modules.mysql.local.socket \"/run/x y.sock\""));
  CHECK_THAT(error_of(local("  slave_net_timeout: 1s\n")), Catch::Contains("slave_net_timeout"));
  CHECK_THAT(error_of(local("  strat: true\n")), Catch::Contains("modules.mysql.local.strat"));
}
