// `neco machines` and `neco ipam`: the operator's side of the inventory routes
// (inventory_routes.hpp), talking to the local agent's admin endpoint. Tables for people,
// --json for scripts (the agent's document as is); the agent's message on any refusal.
// Exit codes: 0 done, 1 refused or failed, 2 usage.
#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "agent/cli/command.hpp"
#include "modules/netboot/machine.hpp"

namespace neco::netboot {
namespace {

namespace po = cli::po;
using json = nlohmann::json;
using cli::kFailed;
using cli::kOk;
using cli::kUsage;

constexpr const char* kRoot = "/v1/netboot/";

// Percent-encodes everything but RFC 3986's unreserved characters (for paths and queries).
std::string encode(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((std::isalnum(u) != 0) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      out += fmt::format("%{:02X}", u);
    }
  }
  return out;
}

// One request; prints the agent's message (or the transport error) and returns nullopt on
// any failure. A failed answer's document, if it is JSON, is left in `failed_body`.
std::optional<json> call(const cli::AdminTarget& target, const std::string& method,
                         const std::string& path, const std::string& body = "",
                         json* failed_body = nullptr) {
  auto reply = cli::admin_request(target, method, path, body);
  if (!reply) {
    std::fprintf(stderr, "neco: %s\n", reply.error().message.c_str());
    return std::nullopt;
  }
  auto doc = json::parse(reply->body, nullptr, false);
  if (doc.is_discarded()) {
    std::fprintf(stderr, "neco: the agent at %s answered %ld with a body that is not JSON\n",
                 target.describe().c_str(), reply->status);
    return std::nullopt;
  }
  if (reply->status >= 400) {
    const auto message = doc.is_object() ? doc.value("message", reply->body) : reply->body;
    std::fprintf(stderr, "neco: %s %s failed (%ld): %s\n", method.c_str(), path.c_str(),
                 reply->status, message.c_str());
    if (failed_body != nullptr) *failed_body = std::move(doc);
    return std::nullopt;
  }
  return doc;
}

// A JSON file, or stdin for "-"; prints why not and returns nullopt.
std::optional<json> read_json_file(const std::string& command, const std::string& file) {
  std::string text;
  if (file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "neco %s: cannot read %s\n", command.c_str(), file.c_str());
      return std::nullopt;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  const auto name = file == "-" ? std::string("stdin") : file;
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    std::fprintf(stderr, "neco %s: %s is not valid JSON: %s\n", command.c_str(), name.c_str(),
                 e.what());
    return std::nullopt;
  }
}

// A date option as the JSON the library's date_from_json reads: digits as unix seconds (an
// integer), anything else as a date string (which the agent or date_from_json judges).
json date_argument(const std::string& text) {
  std::int64_t seconds = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, seconds);
  if (!text.empty() && ec == std::errc() && ptr == end) return seconds;
  return text;
}

void print_json(const json& j) {
  std::printf("%s\n", j.dump(2).c_str());
}

std::string str(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string utc(std::int64_t t) {
  if (t <= 0) return "-";
  const auto tt = static_cast<std::time_t>(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string node_ip(const json& m) {
  const auto it = m.find("ipv4");
  if (it == m.end() || !it->is_array() || it->empty()) return "-";
  return str(it->front(), "address");
}

std::string bmc_ip(const json& m) {
  const auto it = m.find("bmc");
  if (it == m.end() || !it->is_object()) return "-";
  return str(*it, "address");
}

std::string labels_text(const json& m) {
  std::string out;
  if (const auto it = m.find("labels"); it != m.end() && it->is_object()) {
    for (const auto& [k, v] : it->items())
      out += (out.empty() ? "" : ",") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out.empty() ? "-" : out;
}

// The common start of every action: its options, --admin/--socket, parsing.
struct Parsed {
  po::variables_map vm;
  cli::AdminTarget target;
  std::vector<std::string> operands;
};

// An operand (positional argument): its name in --help (also accepted as --NAME) and doc.
struct Operand {
  const char* name;
  const char* doc;
};

// Parses `args` for `neco GROUP ACTION` with `desc` plus the operands, all required; false with
// `code` set when the caller should exit (help printed, or a usage error).
bool parse_action(const std::string& group, const std::string& action, const std::string& synopsis,
                  po::options_description& desc, std::initializer_list<Operand> operands,
                  const std::vector<std::string>& args, Parsed& out, int& code) {
  const auto command = group + " " + action;
  po::positional_options_description pos;
  for (const auto& o : operands) {
    desc.add_options()(o.name, po::value<std::string>(), o.doc);
    pos.add(o.name, 1);
  }
  cli::add_target_options(desc);
  if (!cli::parse(command, synopsis, desc, &pos, args, out.vm, code)) return false;
  for (const auto& o : operands) {
    if (out.vm.count(o.name) == 0) {
      code = cli::usage_error(command, fmt::format("{} is missing", o.name));
      return false;
    }
    out.operands.push_back(out.vm[o.name].as<std::string>());
  }
  out.target = cli::target_from(out.vm);
  return true;
}

std::vector<std::string> strings(const po::variables_map& vm, const char* name) {
  return vm.count(name) != 0 ? vm[name].as<std::vector<std::string>>() : std::vector<std::string>{};
}

// A read-only action: parse, GET kRoot + path(operands), then print the agent's document with
// --json, or as `table` lays it out.
int show(const std::string& group, const std::string& action, const std::string& synopsis,
         std::initializer_list<Operand> operands, const std::vector<std::string>& args,
         const std::function<std::string(const std::vector<std::string>&)>& path,
         const std::function<void(const json&)>& table) {
  po::options_description desc("Options");
  desc.add_options()("json", "print the agent's JSON");
  Parsed p;
  int code = kOk;
  if (!parse_action(group, action, synopsis, desc, operands, args, p, code)) return code;
  auto doc = call(p.target, "GET", std::string(kRoot) + path(p.operands));
  if (!doc) return kFailed;
  if (p.vm.count("json") != 0) {
    print_json(*doc);
  } else {
    table(*doc);
  }
  return kOk;
}

// ---- neco machines

constexpr const char* kMachinesSynopsis =
    "machines list [--serial S] [--rack N] [--role R] [--state S] [--label k=v]... "
    "[--address IP] [--json]\n"
    "       neco machines get SERIAL [--json]\n"
    "       neco machines register FILE          (a JSON spec or array of specs; - for stdin)\n"
    "       neco machines set-state SERIAL STATE\n"
    "       neco machines update SERIAL [--label k=v]... [--remove-label k]... "
    "[--retire-date D]\n"
    "       neco machines remove SERIAL          (only a retired machine)\n"
    "       neco machines audit [--serial S] [--action A] [--since T] [--limit N] [--json]\n\n"
    "The machine inventory on a controller (every action takes --admin URL | --socket PATH).";

int machines_list(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("serial", po::value<std::string>(), "only this serial")(
      "rack", po::value<std::uint32_t>(), "only this rack")(
      "role", po::value<std::string>(), "only this role")("state", po::value<std::string>(),
                                                          "only this state")(
      "label", po::value<std::vector<std::string>>(), "only machines with label k=v (repeatable)")(
      "address", po::value<std::string>(), "the machine with this node or BMC address")(
      "json", "print the agent's JSON");
  Parsed p;
  int code = kOk;
  if (!parse_action("machines", "list",
                    "machines list [--serial S] [--rack N] [--role R] [--state S] "
                    "[--label k=v]... [--address IP] [--json]",
                    desc, {}, args, p, code)) {
    return code;
  }
  std::vector<std::string> query;
  for (const char* name : {"serial", "role", "state", "address"}) {
    if (p.vm.count(name) != 0) query.push_back(name + ("=" + encode(p.vm[name].as<std::string>())));
  }
  if (p.vm.count("rack") != 0)
    query.push_back(fmt::format("rack={}", p.vm["rack"].as<std::uint32_t>()));
  for (const auto& l : strings(p.vm, "label")) {
    if (l.find('=') == std::string::npos) {
      return cli::usage_error("machines list", "--label \"" + l + "\" is not k=v");
    }
    query.push_back("labels=" + encode(l));
  }
  std::string path = std::string(kRoot) + "machines";
  for (std::size_t i = 0; i < query.size(); ++i)
    path += (i == 0 ? "?" : "&") + query[i];
  auto doc = call(p.target, "GET", path);
  if (!doc) return kFailed;
  if (p.vm.count("json") != 0) {
    print_json(*doc);
    return kOk;
  }
  const auto fmt_row = "%-20s %-5s %-6s %-12s %-14s %-16s %s\n";
  std::printf(fmt_row, "SERIAL", "RACK", "INDEX", "ROLE", "STATE", "NODE-IP", "BMC-IP");
  for (const auto& m : doc->value("machines", json::array())) {
    std::printf(fmt_row, str(m, "serial").c_str(), str(m, "rack").c_str(),
                str(m, "index_in_rack").c_str(), str(m, "role").c_str(), str(m, "state").c_str(),
                node_ip(m).c_str(), bmc_ip(m).c_str());
  }
  return kOk;
}

int machines_get(const std::vector<std::string>& args) {
  const auto table = [](const json& m) {
    std::string node_ips;
    for (const auto& nic : m.value("ipv4", json::array()))
      node_ips +=
          (node_ips.empty() ? "" : ", ") + str(nic, "address") + "/" + str(nic, "mask_bits");
    const auto row = [](const char* k, const std::string& v) {
      std::printf("%-14s %s\n", k, v.c_str());
    };
    row("SERIAL", str(m, "serial"));
    row("RACK", str(m, "rack"));
    row("INDEX", str(m, "index_in_rack"));
    row("ROLE", str(m, "role"));
    row("STATE", str(m, "state") + " (since " + utc(m.value("state_since", std::int64_t{0})) + ")");
    row("LABELS", labels_text(m));
    row("BMC-TYPE", str(m, "bmc_type"));
    row("NODE-IP", node_ips.empty() ? "-" : node_ips);
    row("BMC-IP", bmc_ip(m));
    row("REGISTERED", utc(m.value("register_date", std::int64_t{0})));
    row("RETIRE-DATE", utc(m.value("retire_date", std::int64_t{0})));
  };
  return show(
      "machines", "get", "machines get SERIAL [--json]", {{"serial", "the machine"}}, args,
      [](const auto& o) { return "machines/" + encode(o[0]); }, table);
}

int machines_register(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  Parsed p;
  int code = kOk;
  if (!parse_action("machines", "register",
                    "machines register FILE\n\nRegisters the machine spec (a JSON object) or "
                    "specs (an array) in FILE, - for stdin. A malformed spec registers nothing.",
                    desc, {{"file", "JSON file, - for stdin"}}, args, p, code)) {
    return code;
  }
  auto specs = read_json_file("machines register", p.operands[0]);
  if (!specs) return kFailed;
  json failed;
  auto doc = call(p.target, "POST", std::string(kRoot) + "machines", specs->dump(), &failed);
  const auto& results = doc ? *doc : failed;
  const auto print = [](const json& m) {
    std::printf("registered %s: rack %s index %s, node %s, BMC %s\n", str(m, "serial").c_str(),
                str(m, "rack").c_str(), str(m, "index_in_rack").c_str(), node_ip(m).c_str(),
                bmc_ip(m).c_str());
  };
  if (doc && !doc->contains("results")) {
    print(*doc);
    return kOk;
  }
  if (results.is_object() && results.contains("results")) {
    for (const auto& r : results["results"]) {
      if (r.value("ok", false)) {
        print(r.value("machine", json::object()));
      } else {
        std::fprintf(stderr, "failed %s: %s\n", str(r, "serial").c_str(),
                     str(r, "message").c_str());
      }
    }
  }
  return doc ? kOk : kFailed;
}

int machines_set_state(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  Parsed p;
  int code = kOk;
  if (!parse_action("machines", "set-state",
                    "machines set-state SERIAL STATE\n\nStates: uninitialized, healthy, "
                    "unhealthy, unreachable, updating, retiring, retired; the lifecycle table "
                    "decides which moves are allowed.",
                    desc, {{"serial", "the machine"}, {"state", "the new state"}}, args, p, code)) {
    return code;
  }
  const json body = {{"state", p.operands[1]}};
  auto m = call(p.target, "PUT",
                std::string(kRoot) + "machines/" + encode(p.operands[0]) + "/state", body.dump());
  if (!m) return kFailed;
  std::printf("%s is %s\n", str(*m, "serial").c_str(), str(*m, "state").c_str());
  return kOk;
}

int machines_update(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("label", po::value<std::vector<std::string>>(), "set label k=v (repeatable)")(
      "remove-label", po::value<std::vector<std::string>>(), "remove label k (repeatable)")(
      "retire-date", po::value<std::string>(),
      "retire date: unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (0 clears it)");
  Parsed p;
  int code = kOk;
  if (!parse_action("machines", "update",
                    "machines update SERIAL [--label k=v]... [--remove-label k]... "
                    "[--retire-date D]",
                    desc, {{"serial", "the machine"}}, args, p, code)) {
    return code;
  }
  json update = json::object();
  json labels = json::object();
  for (const auto& l : strings(p.vm, "label")) {
    const auto eq = l.find('=');
    if (eq == std::string::npos || eq == 0) {
      return cli::usage_error("machines update", "--label \"" + l + "\" is not k=v");
    }
    labels[l.substr(0, eq)] = l.substr(eq + 1);
  }
  for (const auto& k : strings(p.vm, "remove-label")) {
    if (labels.contains(k)) {
      return cli::usage_error("machines update", "label \"" + k + "\" is both set and removed");
    }
    labels[k] = nullptr;
  }
  if (!labels.empty()) update["labels"] = labels;
  if (p.vm.count("retire-date") != 0) {
    const auto d = p.vm["retire-date"].as<std::string>();
    update["retire_date"] = date_argument(d);
  }
  if (update.empty()) {
    return cli::usage_error("machines update",
                            "nothing to change: give --label, --remove-label or --retire-date");
  }
  auto m = call(p.target, "PUT", std::string(kRoot) + "machines/" + encode(p.operands[0]),
                update.dump());
  if (!m) return kFailed;
  std::printf("updated %s: labels %s, retire date %s\n", str(*m, "serial").c_str(),
              labels_text(*m).c_str(), utc(m->value("retire_date", std::int64_t{0})).c_str());
  return kOk;
}

int machines_remove(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  Parsed p;
  int code = kOk;
  if (!parse_action("machines", "remove",
                    "machines remove SERIAL\n\nRemoves a retired machine and frees its index.",
                    desc, {{"serial", "the machine"}}, args, p, code)) {
    return code;
  }
  if (!call(p.target, "DELETE", std::string(kRoot) + "machines/" + encode(p.operands[0]))) {
    return kFailed;
  }
  std::printf("removed %s\n", p.operands[0].c_str());
  return kOk;
}

int machines_audit(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("serial", po::value<std::string>(), "only this machine")(
      "action", po::value<std::string>(),
      "only this action (put_ipam, register, set_state, update, remove, prune_audit)")(
      "since", po::value<std::string>(),
      "from this time on: unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")(
      "limit", po::value<std::uint64_t>(), "at most N entries, newest first (default 100)")(
      "json", "print the agent's JSON");
  Parsed p;
  int code = kOk;
  if (!parse_action("machines", "audit",
                    "machines audit [--serial S] [--action A] [--since T] [--limit N] [--json]",
                    desc, {}, args, p, code)) {
    return code;
  }
  std::vector<std::string> query;
  for (const char* name : {"serial", "action"}) {
    if (p.vm.count(name) != 0) query.push_back(name + ("=" + encode(p.vm[name].as<std::string>())));
  }
  if (p.vm.count("since") != 0) {
    const auto t = p.vm["since"].as<std::string>();
    auto since = date_from_json(date_argument(t), "--since");
    if (!since) return cli::usage_error("machines audit", since.error().message);
    query.push_back(fmt::format("since={}", *since));
  }
  if (p.vm.count("limit") != 0)
    query.push_back(fmt::format("limit={}", p.vm["limit"].as<std::uint64_t>()));
  std::string path = std::string(kRoot) + "audit";
  for (std::size_t i = 0; i < query.size(); ++i)
    path += (i == 0 ? "?" : "&") + query[i];
  auto doc = call(p.target, "GET", path);
  if (!doc) return kFailed;
  if (p.vm.count("json") != 0) {
    print_json(*doc);
    return kOk;
  }
  const auto fmt_row = "%-21s %-12s %-20s %-28s %s\n";
  std::printf(fmt_row, "TIME", "ACTION", "SERIAL", "WHO", "CHANGE");
  for (const auto& e : doc->value("entries", json::array())) {
    std::string change;
    const auto before = e.value("before", json());
    const auto after = e.value("after", json());
    if (str(e, "action") == "set_state") {
      change = str(before, "state") + " -> " + str(after, "state");
    } else if (str(e, "action") == "update") {
      change = "labels " + labels_text(after) + ", retire " +
               utc(after.value("retire_date", std::int64_t{0}));
    }
    const auto serial = str(e, "serial");
    std::printf(fmt_row, utc(e.value("time", std::int64_t{0})).c_str(), str(e, "action").c_str(),
                serial.empty() ? "-" : serial.c_str(), str(e, "who").c_str(), change.c_str());
  }
  return kOk;
}

int run_machines(const std::vector<std::string>& args) {
  return cli::dispatch("machines", kMachinesSynopsis,
                       {
                           {"list", machines_list},
                           {"get", machines_get},
                           {"register", machines_register},
                           {"set-state", machines_set_state},
                           {"update", machines_update},
                           {"remove", machines_remove},
                           {"audit", machines_audit},
                       },
                       args);
}

// ---- neco ipam

constexpr const char* kIpamSynopsis =
    "ipam get [--json]\n"
    "       neco ipam set FILE        (a JSON IPAM config; - for stdin)\n\n"
    "The IPAM config machines get their addresses from; it cannot change while machines "
    "exist (every action takes --admin URL | --socket PATH).";

int ipam_get(const std::vector<std::string>& args) {
  return show(
      "ipam", "get", "ipam get [--json]", {}, args, [](const auto&) { return std::string("ipam"); },
      [](const json& doc) {
        for (const auto& [k, v] : doc.items()) {
          std::printf("%-24s %s\n", k.c_str(),
                      v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
        }
      });
}

int ipam_set(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  Parsed p;
  int code = kOk;
  if (!parse_action("ipam", "set",
                    "ipam set FILE\n\nStores the IPAM config in FILE (JSON, - for stdin); "
                    "refused while any machine is registered.",
                    desc, {{"file", "JSON file, - for stdin"}}, args, p, code)) {
    return code;
  }
  auto config = read_json_file("ipam set", p.operands[0]);
  if (!config) return kFailed;
  if (!call(p.target, "PUT", std::string(kRoot) + "ipam", config->dump())) return kFailed;
  std::printf("IPAM config stored\n");
  return kOk;
}

int run_ipam(const std::vector<std::string>& args) {
  return cli::dispatch("ipam", kIpamSynopsis,
                       {
                           {"get", ipam_get},
                           {"set", ipam_set},
                       },
                       args);
}

// ---- neco templates

constexpr const char* kTemplatesSynopsis =
    "templates list [--json]\n"
    "       neco templates get ROLE [--json]\n"
    "       neco templates set ROLE FILE        (a JSON boot template; - for stdin)\n"
    "       neco templates set ROLE --config FILE --kind ignition|cloud-config --kernel ASSET\n"
    "                          [--initrd ASSET]... [--cmdline TEXT]\n"
    "       neco templates remove ROLE\n"
    "       neco templates render SERIAL [--json]   (the machine's iPXE script and config)\n\n"
    "Boot templates per machine role: kernel and initrd assets, kernel command line and the "
    "boot config (Ignition or cloud-config) rendered with each machine's fields; a template "
    "that does not render is refused (every action takes --admin URL | --socket PATH).";

int templates_list(const std::vector<std::string>& args) {
  const auto table = [](const json& doc) {
    std::printf("%-16s %-13s %-24s %-32s %s\n", "ROLE", "KIND", "KERNEL", "INITRDS", "UPDATED");
    for (const auto& t : doc.value("templates", json::array())) {
      std::string initrds;
      for (const auto& i : t.value("initrds", json::array()))
        initrds += (initrds.empty() ? "" : ",") + i.get<std::string>();
      std::printf("%-16s %-13s %-24s %-32s %s by %s\n", str(t, "role").c_str(),
                  str(t, "kind").c_str(), str(t, "kernel").c_str(), initrds.c_str(),
                  utc(t.value("updated", std::int64_t{0})).c_str(), str(t, "who").c_str());
    }
  };
  return show(
      "templates", "list", "templates list [--json]", {}, args,
      [](const auto&) { return std::string("templates"); }, table);
}

int templates_get(const std::vector<std::string>& args) {
  const auto table = [](const json& doc) {
    std::printf("role:    %s\nkind:    %s\nkernel:  %s\ncmdline: %s\n", str(doc, "role").c_str(),
                str(doc, "kind").c_str(), str(doc, "kernel").c_str(), str(doc, "cmdline").c_str());
    for (const auto& i : doc.value("initrds", json::array()))
      std::printf("initrd:  %s\n", i.get<std::string>().c_str());
    std::printf("updated: %s by %s\n--- config\n%s\n",
                utc(doc.value("updated", std::int64_t{0})).c_str(), str(doc, "who").c_str(),
                str(doc, "config").c_str());
  };
  return show(
      "templates", "get", "templates get ROLE [--json]", {{"role", "machine role"}}, args,
      [](const auto& o) { return "templates/" + encode(o[0]); }, table);
}

int templates_set(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("file", po::value<std::string>(), "a JSON boot template (- for stdin)")(
      "config", po::value<std::string>(), "the boot config template file (instead of FILE)")(
      "kind", po::value<std::string>(), "ignition or cloud-config (with --config)")(
      "kernel", po::value<std::string>(), "kernel asset name (with --config)")(
      "initrd", po::value<std::vector<std::string>>(), "initrd asset name, in order (repeat)")(
      "cmdline", po::value<std::string>()->default_value(""), "kernel parameters (a template)");
  po::positional_options_description pos;
  pos.add("role", 1).add("file", 1);
  desc.add_options()("role", po::value<std::string>(), "machine role");
  cli::add_target_options(desc);
  po::variables_map vm;
  int code = kOk;
  const char* synopsis =
      "templates set ROLE FILE\n       neco templates set ROLE --config FILE --kind KIND "
      "--kernel ASSET [--initrd ASSET]... [--cmdline TEXT]\n\nStores ROLE's boot template; "
      "the agent renders it against a sample machine first and refuses it with the reason.";
  if (!cli::parse("templates set", synopsis, desc, &pos, args, vm, code)) return code;
  if (vm.count("role") == 0) return cli::usage_error("templates set", "ROLE is missing");
  const auto role = vm["role"].as<std::string>();
  json doc;
  if (vm.count("file") != 0) {
    if (vm.count("config") != 0) {
      return cli::usage_error("templates set", "give FILE or --config, not both");
    }
    auto j = read_json_file("templates set", vm["file"].as<std::string>());
    if (!j) return kFailed;
    doc = std::move(*j);
  } else {
    if (vm.count("config") == 0 || vm.count("kind") == 0 || vm.count("kernel") == 0) {
      return cli::usage_error("templates set", "FILE, or --config with --kind and --kernel");
    }
    std::ifstream in(vm["config"].as<std::string>(), std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "neco templates set: cannot read %s\n",
                   vm["config"].as<std::string>().c_str());
      return kFailed;
    }
    std::ostringstream text;
    text << in.rdbuf();
    doc = {{"kind", vm["kind"].as<std::string>()},
           {"config", text.str()},
           {"kernel", vm["kernel"].as<std::string>()},
           {"initrds", strings(vm, "initrd")},
           {"cmdline", vm["cmdline"].as<std::string>()}};
  }
  if (!call(cli::target_from(vm), "PUT", std::string(kRoot) + "templates/" + encode(role),
            doc.dump())) {
    return kFailed;
  }
  std::printf("template of role %s stored\n", role.c_str());
  return kOk;
}

int templates_remove(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  Parsed p;
  int code = kOk;
  if (!parse_action("templates", "remove", "templates remove ROLE", desc,
                    {{"role", "machine role"}}, args, p, code)) {
    return code;
  }
  if (!call(p.target, "DELETE", std::string(kRoot) + "templates/" + encode(p.operands[0]))) {
    return kFailed;
  }
  std::printf("template of role %s removed\n", p.operands[0].c_str());
  return kOk;
}

int templates_render(const std::vector<std::string>& args) {
  return show(
      "templates", "render",
      "templates render SERIAL [--json]\n\nWhat the machine gets when it boots: its iPXE script "
      "and its rendered boot config.",
      {{"serial", "machine serial"}}, args,
      [](const auto& o) { return "machines/" + encode(o[0]) + "/boot"; },
      [](const json& doc) {
        std::printf("--- iPXE script\n%s--- %s\n%s\n", str(doc, "script").c_str(),
                    str(doc, "content_type").c_str(), str(doc, "config").c_str());
      });
}

int run_templates(const std::vector<std::string>& args) {
  return cli::dispatch("templates", kTemplatesSynopsis,
                       {
                           {"list", templates_list},
                           {"get", templates_get},
                           {"set", templates_set},
                           {"remove", templates_remove},
                           {"render", templates_render},
                       },
                       args);
}

}  // namespace

}  // namespace neco::netboot

// Registration may throw only bad_alloc, before main: nothing to catch it for.
NECO_REGISTER_COMMAND("ipam",  // NOLINT(cert-err58-cpp)
                      "show or set the netboot IPAM config (controllers)", neco::netboot::run_ipam);
NECO_REGISTER_COMMAND("templates",  // NOLINT(cert-err58-cpp)
                      "boot templates per machine role: kernel, initrds, boot config (controllers)",
                      neco::netboot::run_templates);
NECO_REGISTER_COMMAND("machines",  // NOLINT(cert-err58-cpp)
                      "list, register and change machines of the netboot inventory (controllers)",
                      neco::netboot::run_machines);
