#include "modules/netboot/templates.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agent/store/sqlite_store.hpp"
#include "modules/netboot/inventory.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/modules/netboot/ipam_example.hpp"

using namespace neco;
using namespace neco::netboot;
using nlohmann::json;

namespace {

constexpr std::string_view kUrl = "http://10.69.0.3:10080";

Machine machine() {
  Machine m;
  m.serial = "ABC123";
  m.rack = 2;
  m.index_in_rack = 5;
  m.role = "worker";
  m.bmc_type = "iDRAC-9";
  m.labels = {{"zone", "a"}, {"quote", "say \"hi\"\\"}};
  m.register_date = 1'700'000'000;
  m.ipv4 = {Interface{0x0A450085, 26, 0x0A450081}, Interface{0x0A450145, 26, 0x0A450141}};
  m.bmc = Interface{0x0A480205, 20, 0x0A480001};
  return m;
}

BootTemplate ignition() {
  BootTemplate t;
  t.role = "worker";
  t.kind = ConfigKind::ignition;
  t.kernel = "vmlinuz-6.1";
  t.initrds = {"initrd-6.1.img", "extra.cpio"};
  t.cmdline = "console=ttyS0 neco.rack={{ rack }}";
  t.config = R"({"ignition": {"version": "3.3.0"},
  "storage": {"files": [{"path": "/etc/hostname", "contents": {"source": "data:,{{serial}}"}}]},
  "passwd": {"users": [{"name": "core", "gecos": "{{ labels.quote }}"}]},
  "x": "{{ipv4}} {{ipv4.1}} {{ipv4.1.gateway}} {{netmask}} {{mask_bits}} {{bmc.ipv4}} {{server_url}}"})";
  return t;
}

}  // namespace

TEST_CASE("Templates render machine fields, JSON-escaped for Ignition", "[netboot][templates]") {
  auto out = render_config(ignition(), machine(), kUrl);
  REQUIRE(out);
  const json doc = json::parse(*out);
  CHECK(doc["storage"]["files"][0]["contents"]["source"] == "data:,ABC123");
  // A label with quotes and a backslash stays inside its string.
  CHECK(doc["passwd"]["users"][0]["gecos"] == "say \"hi\"\\");
  CHECK(doc["x"] ==
        "10.69.0.133 10.69.1.69 10.69.1.65 255.255.255.192 26 10.72.2.5 http://10.69.0.3:10080");

  auto plain = render_text("{{ rack }}-{{index_in_rack}}-{{role}}-{{labels.zone}}-{{state}}",
                           machine(), kUrl, false);
  REQUIRE(plain);
  CHECK(*plain == "2-5-worker-a-uninitialized");
}

TEST_CASE("Template errors name the problem", "[netboot][templates]") {
  const auto m = machine();
  auto unknown = render_text("a {{ nope }} b", m, kUrl, false);
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().code == Errc::invalid_argument);
  CHECK(unknown.error().message.find("nope") != std::string::npos);
  auto open = render_text("a {{ serial", m, kUrl, false);
  REQUIRE_FALSE(open);
  CHECK(open.error().message.find("never closed") != std::string::npos);
  auto label = render_text("{{ labels.missing }}", m, kUrl, false);
  REQUIRE_FALSE(label);
  CHECK(label.error().code == Errc::failed_precondition);
  CHECK(label.error().message.find("missing") != std::string::npos);
  auto nic = render_text("{{ ipv4.7 }}", m, kUrl, false);
  REQUIRE_FALSE(nic);
  CHECK(nic.error().message.find("2 node addresses") != std::string::npos);
  CHECK_FALSE(render_text("{{ ipv4.0.nope }}", m, kUrl, false));
  CHECK_FALSE(render_text("{{ bmc.nope }}", m, kUrl, false));
  CHECK_FALSE(render_text("{{ labels. }}", m, kUrl, false));
  CHECK_FALSE(render_text("{{ ipv4.x }}", m, kUrl, false));
}

TEST_CASE("validate() checks names and renders against a sample", "[netboot][templates]") {
  CHECK(validate(ignition()));
  auto t = ignition();
  t.config = R"({"ignition": {"version": "3.3.0"}, "a": {{ labels.anything }}})";
  // Labels resolve in the sample ("sample"), which here makes invalid JSON: refused.
  auto bad_json = validate(t);
  REQUIRE_FALSE(bad_json);
  CHECK(bad_json.error().message.find("config:") == 0);
  t.config = R"({"version": 1})";
  CHECK_FALSE(validate(t));  // no ignition.version
  t = ignition();
  t.cmdline = "a {{ typo }}";
  auto typo = validate(t);
  REQUIRE_FALSE(typo);
  CHECK(typo.error().message.find("cmdline:") == 0);
  t = ignition();
  t.cmdline = "a\nb";
  CHECK_FALSE(validate(t));
  t = ignition();
  t.kernel = "../vmlinuz";
  CHECK_FALSE(validate(t));
  t = ignition();
  t.initrds = {""};
  CHECK_FALSE(validate(t));
  t = ignition();
  t.role = "bad role";
  CHECK_FALSE(validate(t));

  BootTemplate cc;
  cc.role = "storage";
  cc.kind = ConfigKind::cloud_config;
  cc.kernel = "vmlinuz";
  cc.config =
      "#cloud-config\nhostname: {{ serial }}\nwrite_files:\n  - path: /etc/rack\n"
      "    content: \"{{ rack }}\"\n";
  CHECK(validate(cc));
  cc.config = "hostname: x\n";
  CHECK_FALSE(validate(cc));  // no #cloud-config line
  cc.config = "#cloud-config\n- a\n- b\n";
  CHECK_FALSE(validate(cc));  // a list, not a mapping
  cc.config = "#cloud-config\na: [b\n";
  CHECK_FALSE(validate(cc));  // not YAML
}

TEST_CASE("Boot template JSON round trip and refusals", "[netboot][templates]") {
  auto t = ignition();
  auto back = boot_template_from_json(to_json(t));
  REQUIRE(back);
  CHECK(*back == t);
  CHECK_FALSE(boot_template_from_json(json::array()));
  CHECK_FALSE(boot_template_from_json(json{{"role", "x"}, {"colour", "red"}}));
  CHECK_FALSE(boot_template_from_json(json{{"kind", "kickstart"}}));
  CHECK_FALSE(boot_template_from_json(json{{"initrds", "one"}}));
  CHECK_FALSE(boot_template_from_json(json{{"initrds", json::array({1})}}));
  CHECK_FALSE(boot_template_from_json(json{{"kernel", 5}}));
}

TEST_CASE("iPXE scripts", "[netboot][templates]") {
  auto s = machine_ipxe_script(ignition(), machine(), kUrl);
  REQUIRE(s);
  CHECK(s->starts_with("#!ipxe\n"));
  CHECK(s->find("kernel http://10.69.0.3:10080/boot/assets/vmlinuz-6.1 initrd=initrd-6.1.img "
                "initrd=extra.cpio console=ttyS0 neco.rack=2 ignition.config.url="
                "http://10.69.0.3:10080/boot/machines/ABC123/config || goto failed\n") !=
        std::string::npos);
  CHECK(s->find("initrd http://10.69.0.3:10080/boot/assets/initrd-6.1.img || goto failed\n"
                "initrd http://10.69.0.3:10080/boot/assets/extra.cpio || goto failed\n"
                "boot || goto failed\n") != std::string::npos);
  auto cc = ignition();
  cc.kind = ConfigKind::cloud_config;
  auto c = machine_ipxe_script(cc, machine(), kUrl);
  REQUIRE(c);
  CHECK(c->find(" ds=nocloud-net;s=http://10.69.0.3:10080/boot/machines/ABC123/ ||") !=
        std::string::npos);
  const auto entry = entry_ipxe_script(kUrl);
  CHECK(entry.find("chain --autofree http://10.69.0.3:10080/boot/machines/${serial:uristring}/ipxe"
                   " || goto failed") != std::string::npos);
  const auto wait = waiting_ipxe_script(kUrl, "no machine 'X'\n$(evil)", 30);
  CHECK(wait.find("echo neco: no machine 'X'  (evil)\n") != std::string::npos);
  CHECK(wait.find("sleep 30\n") != std::string::npos);
}

TEST_CASE("Inventory stores templates with audit", "[netboot][templates][inventory]") {
  neco::testing::TempDir dir;
  auto s = store::SqliteStore::open(dir.file("store.db"));
  REQUIRE(s);
  Inventory inv(**s);
  CHECK(inv.get_template("worker").error().code == Errc::not_found);
  auto put = inv.put_template(ignition(), "alice");
  REQUIRE(put);
  CHECK(put->who == "alice");
  CHECK(put->updated > 0);
  auto got = inv.get_template("worker");
  REQUIRE(got);
  CHECK(*got == *put);
  // The same template again changes nothing (no new audit entry, same who).
  auto again = inv.put_template(ignition(), "bob");
  REQUIRE(again);
  CHECK(again->who == "alice");
  // A broken template is refused and the stored one stays.
  auto bad = ignition();
  bad.config = "{";
  CHECK(inv.put_template(bad, "bob").error().code == Errc::invalid_argument);
  CHECK(inv.get_template("worker")->config == ignition().config);
  auto changed = ignition();
  changed.cmdline = "quiet";
  REQUIRE(inv.put_template(changed, "bob"));
  auto list = inv.list_templates();
  REQUIRE(list);
  REQUIRE(list->size() == 1);
  CHECK((*list)[0].cmdline == "quiet");
  REQUIRE(inv.remove_template("worker", "carol"));
  CHECK(inv.remove_template("worker", "carol").error().code == Errc::not_found);
  CHECK(inv.get_template("bad name").error().code == Errc::invalid_argument);
  AuditQuery q;
  q.limit = 0;
  q.newest_first = false;
  auto audit = inv.audit(q);
  REQUIRE(audit);
  std::vector<std::string> actions;
  for (const auto& e : *audit)
    actions.push_back(e.action + ":" + e.who);
  CHECK(actions == std::vector<std::string>{"put_template:alice", "put_template:bob",
                                            "remove_template:carol"});
}
