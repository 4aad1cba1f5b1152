#include "agent/cli/cli.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/cli/admin_client.hpp"
#include "agent/cli/command.hpp"
#include "agent/log/log.hpp"
#include "agent/module/registry.hpp"
#include "agent/runtime/agent.hpp"
#include "agent/runtime/code_residency.hpp"
#include "agent/runtime/loader.hpp"
#include "agent/util/failpoint.hpp"

namespace neco::cli {
namespace {

// Commands registered by modules (static initializers run before main).
std::vector<Command>& registered() {
  static std::vector<Command> list;
  return list;
}

}  // namespace

bool register_command(Command command) {
  registered().push_back(command);
  return true;
}

int usage_error(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "neco %s: %s\nTry 'neco %s --help'.\n", command.c_str(), message.c_str(),
               command.c_str());
  return kUsage;
}

bool parse(const std::string& command, const std::string& synopsis, po::options_description& desc,
           const po::positional_options_description* positional,
           const std::vector<std::string>& args, po::variables_map& vm, int& code) {
  desc.add_options()("help,h", "show this help");
  try {
    po::command_line_parser parser(args);
    parser.options(desc);
    if (positional != nullptr) parser.positional(*positional);
    po::store(parser.run(), vm);
    // --help wins over missing required options, so it is checked before notify().
    if (vm.count("help") != 0) {
      std::cout << "Usage: neco " << synopsis << "\n\n" << desc << "\n";
      code = kOk;
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    code = usage_error(command, e.what());
    return false;
  }
  return true;
}

int dispatch(const std::string& command, const char* synopsis,
             std::initializer_list<Action> actions, const std::vector<std::string>& args) {
  if (args.empty()) return usage_error(command, "an action is needed");
  const auto& action = args[0];
  if (action == "--help" || action == "-h" || action == "help") {
    std::printf("Usage: neco %s\n", synopsis);
    return kOk;
  }
  std::string known;
  for (const auto& [name, run] : actions) {
    if (action == name) return run({args.begin() + 1, args.end()});
    known += (known.empty() ? "" : ", ") + std::string(name);
  }
  return usage_error(command, "unknown action '" + action + "' (known: " + known + ")");
}

void add_target_options(po::options_description& desc) {
  desc.add_options()("admin", po::value<std::string>(),
                     "admin endpoint URL (default: $NECO_ADMIN or http://127.0.0.1:9180)")(
      "socket", po::value<std::string>(), "talk to the admin unix socket at this path instead");
}

AdminTarget target_from(const po::variables_map& vm) {
  AdminTarget t;
  if (const char* env = std::getenv("NECO_ADMIN"); env != nullptr && *env != '\0') {
    t.base_url = env;
  }
  if (vm.count("admin") != 0) t.base_url = vm["admin"].as<std::string>();
  if (vm.count("socket") != 0) t.socket = vm["socket"].as<std::string>();
  while (!t.base_url.empty() && t.base_url.back() == '/')
    t.base_url.pop_back();
  if (t.base_url.find("://") == std::string::npos) t.base_url = "http://" + t.base_url;
  return t;
}

// Fetches JSON from the agent; prints the error and returns false on any failure.
bool fetch_json(const AdminTarget& target, const std::string& method, const std::string& path,
                nlohmann::json& out, const std::string& body) {
  auto reply = admin_request(target, method, path, body);
  if (!reply) {
    std::fprintf(stderr, "neco: %s\n", reply.error().message.c_str());
    return false;
  }
  try {
    out = nlohmann::json::parse(reply->body);
  } catch (const nlohmann::json::exception&) {
    std::fprintf(stderr, "neco: the agent at %s answered %ld with a body that is not JSON\n",
                 target.describe().c_str(), reply->status);
    return false;
  }
  if (reply->status >= 400 && reply->status != 503) {
    std::fprintf(stderr, "neco: %s %s failed (%ld): %s\n", method.c_str(), path.c_str(),
                 reply->status, out.value("message", reply->body).c_str());
    return false;
  }
  return true;
}

namespace {

int cmd_agent(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("role", po::value<std::string>()->required(), "role file (YAML)");
  po::variables_map vm;
  int code = kOk;
  if (!parse("agent",
             "agent --role FILE\n\nRuns the agent in the foreground (systemd: "
             "Type=notify). SIGHUP reloads the role file, SIGTERM stops.",
             desc, nullptr, args, vm, code)) {
    return code;
  }
  // First, while this is the only thread: see code_residency.hpp.
  const auto residency = map_code_on_demand();
  log::init_from_environment();
  if (residency.applied) {
    log::Logger("agent").debug(
        "code mapped on demand: {} KiB of read-only mappings, {} KiB released",
        residency.registered_bytes / 1024, residency.dropped_bytes / 1024);
  } else {
    log::Logger("agent").debug("code mapped by the kernel's defaults: {}", residency.detail);
  }
  // Before any thread starts (the table is not locked); a fault test must not run without its
  // fault, so a bad value refuses the start.
  if (auto armed = failpoint::arm_from_environment(); !armed) {
    std::fprintf(stderr, "neco: refusing to start: %s\n", armed.error().message.c_str());
    return kFailed;
  }
  if (failpoint::any_armed()) {
    log::Logger("agent").warning("failpoints armed (the process kills itself there): {}",
                                 failpoint::armed_names());
  }
  auto loaded = load_config(vm["role"].as<std::string>());
  if (!loaded) {
    std::fprintf(stderr, "%s\n", loaded.error().message.c_str());
    return kFailed;
  }
  Agent agent(std::move(*loaded), AgentOptions{});
  return agent.run();
}

int cmd_config(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("action", po::value<std::string>()->required(), "check or reference")(
      "file", po::value<std::string>(), "role file to validate")(
      "json", "print the effective configuration as JSON when the file is valid");
  po::positional_options_description pos;
  pos.add("action", 1).add("file", 1);
  po::variables_map vm;
  int code = kOk;
  if (!parse("config",
             "config check FILE [--json]\n       neco config reference\n\n"
             "check: validates a role file exactly as the agent would (core sections "
             "and every module's section) without starting anything. Exit 0 when "
             "valid; otherwise every problem is printed as FILE:LINE:COLUMN: message "
             "and the exit code is 1.\nreference: prints every core role-file field "
             "with its type, default and meaning (Markdown).",
             desc, &pos, args, vm, code)) {
    return code;
  }
  const auto action = vm["action"].as<std::string>();
  if (action == "reference") {
    std::vector<config::FieldDoc> docs;
    config::core_schema().document("", config::CoreConfig{}, docs);
    std::printf("| key | type | default | meaning |\n|---|---|---|---|\n");
    for (const auto& d : docs) {
      std::printf("| `%s` | %s | %s | %s |\n", d.key.c_str(), d.type.c_str(),
                  d.required
                      ? "(required)"
                      : (d.default_value.empty() ? "\"\"" : "`" + d.default_value + "`").c_str(),
                  d.doc.c_str());
    }
    return kOk;
  }
  if (action != "check") {
    return usage_error("config", "unknown action '" + action + "' (known: check, reference)");
  }
  if (vm.count("file") == 0) return usage_error("config", "config check needs a FILE");
  const auto file = vm["file"].as<std::string>();
  auto loaded = load_config(file);
  if (!loaded) {
    std::fprintf(stderr, "%s\n", loaded.error().message.c_str());
    return kFailed;
  }
  if (vm.count("json") != 0) {
    auto core = config::dump_core(loaded->role.core);
    nlohmann::json mods = nlohmann::json::object();
    for (const auto& m : loaded->modules)
      mods[std::string(m->name())] = m->effective_config();
    core["modules"] = mods;
    std::printf("%s\n", core.dump(2).c_str());
    return kOk;
  }
  std::string names;
  for (const auto& m : loaded->modules)
    names += (names.empty() ? "" : ", ") + std::string(m->name());
  std::printf(
      "%s: OK (node '%s', %s, modules: %s)\n", file.c_str(), loaded->role.core.node.name.c_str(),
      loaded->role.core.controller ? "controller" : "node", names.empty() ? "none" : names.c_str());
  return kOk;
}

std::string format_uptime(double seconds) {
  auto s = static_cast<long long>(seconds);
  if (s >= 86400) return fmt::format("{}d{}h", s / 86400, (s % 86400) / 3600);
  if (s >= 3600) return fmt::format("{}h{}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

int cmd_status(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("json", "print the agent's /status document as JSON");
  add_target_options(desc);
  po::variables_map vm;
  int code = kOk;
  if (!parse("status",
             "status [--json] [--admin URL | --socket PATH]\n\nShows the local agent's "
             "state: node, version, uptime, leader and module health.",
             desc, nullptr, args, vm, code)) {
    return code;
  }
  nlohmann::json st;
  if (!fetch_json(target_from(vm), "GET", "/status", st)) return kFailed;
  if (vm.count("json") != 0) {
    std::printf("%s\n", st.dump(2).c_str());
    return kOk;
  }
  std::string leader = "-";
  if (st.contains("leader") && st["leader"].is_object()) {
    const auto& l = st["leader"];
    leader = l.value("name", std::string("none")) + " (term " +
             std::to_string(l.value("term", 0LL)) + ")";
    if (l.value("name", std::string()).empty()) leader = "none yet";
  }
  std::printf("%-10s %s\n", "NODE", st.value("node", std::string()).c_str());
  std::printf("%-10s %s\n", "VERSION", st.value("version", std::string()).c_str());
  std::printf("%-10s %s\n", "UPTIME", format_uptime(st.value("uptime_seconds", 0.0)).c_str());
  std::printf("%-10s %s\n", "ROLE", st.value("role", std::string()).c_str());
  std::printf("%-10s %s\n", "LEADER", leader.c_str());
  if (st.contains("cluster") && st["cluster"].is_object()) {
    const auto& c = st["cluster"];
    std::string text;
    if (c.contains("joined")) {
      text = c.value("joined", false) ? "joined via " + c.value("controller", std::string("-"))
                                      : "not joined";
    } else {
      text = c.value("serving", false) ? "API " + c.value("api", std::string()) : "API not serving";
      text += ", CA " + c.value("ca_fingerprint", std::string("-"));
    }
    if (c.contains("problem")) text += " (" + c.value("problem", std::string()) + ")";
    std::printf("%-10s %s\n", "CLUSTER", text.c_str());
  }
  std::printf("\n%-16s %-10s %s\n", "MODULE", "HEALTH", "MESSAGE");
  const auto mods = st.value("modules", nlohmann::json::array());
  if (mods.empty()) std::printf("%-16s %-10s %s\n", "(none)", "-", "");
  for (const auto& m : mods) {
    std::printf("%-16s %-10s %s\n", m.value("name", std::string()).c_str(),
                m.value("health", std::string()).c_str(),
                m.value("message", std::string()).c_str());
  }
  return kOk;
}

int cmd_reload(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_target_options(desc);
  po::variables_map vm;
  int code = kOk;
  if (!parse("reload",
             "reload [--admin URL | --socket PATH]\n\nAsks the local agent to re-read "
             "its role file (as SIGHUP does) and prints the outcome.",
             desc, nullptr, args, vm, code)) {
    return code;
  }
  auto reply = admin_request(target_from(vm), "POST", "/v1/agent/reload");
  if (!reply) {
    std::fprintf(stderr, "neco: %s\n", reply.error().message.c_str());
    return kFailed;
  }
  nlohmann::json j = nlohmann::json::parse(reply->body, nullptr, false);
  if (reply->status != 200) {
    std::fprintf(stderr, "neco: reload refused; the agent keeps its last good config:\n%s\n",
                 j.is_object() ? j.value("message", reply->body).c_str() : reply->body.c_str());
    return kFailed;
  }
  std::printf("reloaded %s\n", j.is_object() ? j.value("file", std::string()).c_str() : "");
  return kOk;
}

}  // namespace

std::string format_age(std::int64_t unix_seconds) {
  if (unix_seconds <= 0) return "never";
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  return format_uptime(static_cast<double>(std::max<std::int64_t>(0, now - unix_seconds))) + " ago";
}

namespace {

int cmd_join_token(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("action", po::value<std::string>()->required(), "create or list")(
      "ttl", po::value<std::string>()->default_value("1h"), "token lifetime (1s to 168h)")(
      "json", "print as JSON");
  add_target_options(desc);
  po::positional_options_description pos;
  pos.add("action", 1);
  po::variables_map vm;
  int code = kOk;
  if (!parse("join-token",
             "join-token create [--ttl 1h] [--json]\n       neco join-token list [--json]\n\n"
             "create: on a controller, makes a single-use token a new node joins with, and "
             "prints the role-file section to give that node.\nlist: tokens not yet used or "
             "expired.",
             desc, &pos, args, vm, code)) {
    return code;
  }
  const auto action = vm["action"].as<std::string>();
  const auto target = target_from(vm);
  nlohmann::json j;
  if (action == "list") {
    if (!fetch_json(target, "GET", "/v1/cluster/join-tokens", j)) return kFailed;
    if (vm.count("json") != 0) {
      std::printf("%s\n", j.dump(2).c_str());
      return kOk;
    }
    std::printf("%-10s %-20s %s\n", "ID", "CREATED BY", "EXPIRES");
    for (const auto& t : j.value("tokens", nlohmann::json::array())) {
      const auto left = t.value("expires_at", std::int64_t{0}) -
                        std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
      std::printf("%-10s %-20s in %s\n", t.value("id", std::string()).c_str(),
                  t.value("created_by", std::string()).c_str(),
                  format_uptime(static_cast<double>(std::max<std::int64_t>(0, left))).c_str());
    }
    return kOk;
  }
  if (action != "create") {
    return usage_error("join-token", "unknown action '" + action + "' (known: create, list)");
  }
  const nlohmann::json body = {{"ttl", vm["ttl"].as<std::string>()}};
  if (!fetch_json(target, "POST", "/v1/cluster/join-tokens", j, body.dump())) return kFailed;
  if (vm.count("json") != 0) {
    std::printf("%s\n", j.dump(2).c_str());
    return kOk;
  }
  std::string controllers;
  for (const auto& c : j.value("controllers", nlohmann::json::array()))
    controllers += (controllers.empty() ? "" : ", ") + c.get<std::string>();
  std::printf(
      "token:          %s\nca_fingerprint: %s\nexpires in:     %s (single use)\n\n"
      "Give the new node this role-file section:\n\n"
      "cluster:\n  join:\n    controllers: [%s]\n    token: %s\n    ca_fingerprint: %s\n",
      j.value("token", std::string()).c_str(), j.value("ca_fingerprint", std::string()).c_str(),
      vm["ttl"].as<std::string>().c_str(), controllers.c_str(),
      j.value("token", std::string()).c_str(), j.value("ca_fingerprint", std::string()).c_str());
  return kOk;
}

int cmd_nodes(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("action", po::value<std::string>()->default_value("list"), "list or remove")(
      "name", po::value<std::string>(), "node to remove")("json", "print as JSON");
  add_target_options(desc);
  po::positional_options_description pos;
  pos.add("action", 1).add("name", 1);
  po::variables_map vm;
  int code = kOk;
  if (!parse("nodes",
             "nodes [list] [--json]\n       neco nodes remove NAME\n\n"
             "list (on a controller): every cluster member with role, version, state and "
             "last heartbeat.\nremove: forgets a member; it must join again with a new token.",
             desc, &pos, args, vm, code)) {
    return code;
  }
  const auto action = vm["action"].as<std::string>();
  const auto target = target_from(vm);
  nlohmann::json j;
  if (action == "remove") {
    if (vm.count("name") == 0) return usage_error("nodes", "nodes remove needs a NAME");
    const auto name = vm["name"].as<std::string>();
    if (!fetch_json(target, "DELETE", "/v1/cluster/nodes/" + name, j)) return kFailed;
    std::printf("removed %s\n", name.c_str());
    return kOk;
  }
  if (action != "list") {
    return usage_error("nodes", "unknown action '" + action + "' (known: list, remove)");
  }
  if (!fetch_json(target, "GET", "/v1/cluster/nodes", j)) return kFailed;
  if (vm.count("json") != 0) {
    std::printf("%s\n", j.dump(2).c_str());
    return kOk;
  }
  std::printf("%-24s %-11s %-10s %-12s %s\n", "NAME", "ROLE", "VERSION", "STATE", "LAST SEEN");
  for (const auto& n : j.value("nodes", nlohmann::json::array())) {
    std::string role = n.value("role", std::string());
    if (n.value("leader", false)) role += "*";
    std::printf("%-24s %-11s %-10s %-12s %s\n", n.value("name", std::string()).c_str(),
                role.c_str(), n.value("version", std::string()).c_str(),
                n.value("state", std::string()).c_str(),
                format_age(n.value("last_seen", std::int64_t{0})).c_str());
  }
  return kOk;
}

int cmd_version(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("json", "print as JSON");
  po::variables_map vm;
  int code = kOk;
  if (!parse("version", "version [--json]\n\nPrints this binary's version and modules.", desc,
             nullptr, args, vm, code)) {
    return code;
  }
  const auto modules = ModuleRegistry::instance().names();
  if (vm.count("json") != 0) {
    std::printf("%s\n",
                nlohmann::json({{"version", NECO_VERSION}, {"modules", modules}}).dump().c_str());
    return kOk;
  }
  std::string list;
  for (const auto& m : modules)
    list += (list.empty() ? "" : ", ") + m;
  std::printf("neco %s (modules: %s)\n", NECO_VERSION, list.empty() ? "none" : list.c_str());
  return kOk;
}

const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
      {"agent", "run the agent daemon with a role file", cmd_agent},
      {"config", "validate a role file (config check FILE)", cmd_config},
      {"join-token", "create a single-use token for a node to join (controllers)", cmd_join_token},
      {"nodes", "list cluster members and their state (controllers)", cmd_nodes},
      {"reload", "make the local agent re-read its role file", cmd_reload},
      {"status", "show the local agent's state", cmd_status},
      {"version", "print version and compiled-in modules", cmd_version},
  };
  static const std::vector<Command> merged = [] {
    std::vector<Command> out = all;
    for (const auto& c : registered()) {
      const bool taken = std::any_of(out.begin(), out.end(), [&](const Command& o) {
        return std::string_view(o.name) == c.name;
      });
      if (taken) {
        std::fprintf(stderr, "neco: a module registered command '%s' twice; ignored\n", c.name);
      } else {
        out.push_back(c);
      }
    }
    std::sort(out.begin(), out.end(), [](const Command& a, const Command& b) {
      return std::string_view(a.name) < std::string_view(b.name);
    });
    return out;
  }();
  return merged;
}

void print_help() {
  std::printf(
      "Usage: neco COMMAND [OPTIONS]\n\nneco is a datacenter operating agent.\n\n"
      "Commands:\n");
  for (const auto& c : commands())
    std::printf("  %-11s %s\n", c.name, c.summary);
  std::printf("\nRun 'neco COMMAND --help' for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help();
    return args.empty() ? kUsage : kOk;
  }
  if (args[0] == "--version") return cmd_version({});
  for (const auto& c : commands()) {
    if (args[0] == c.name) return c.run({args.begin() + 1, args.end()});
  }
  std::fprintf(stderr, "neco: unknown command '%s'\n", args[0].c_str());
  print_help();
  return kUsage;
}

}  // namespace neco::cli
