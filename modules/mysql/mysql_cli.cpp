// `neco mysql`: the managed MariaDB clusters' state, planned switchover, the operator pause and
// clusters created or deleted through the API (create sends the definition file as it is, YAML
// or JSON, and the agent parses it with the role file's schema, so errors carry its
// line:column), over the agent's /v1/mysql/ admin routes (any controller answers status; actions go
// to the leader, whose name a follower's error gives).
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agent/cli/command.hpp"

namespace neco::mysql {

namespace {

namespace po = boost::program_options;
using cli::kFailed;
using cli::kOk;
using nlohmann::json;

constexpr const char* kRoot = "/v1/mysql/clusters";

constexpr const char* kSynopsis =
    "mysql status [CLUSTER] [--json]\n"
    "       neco mysql switchover CLUSTER [--to INSTANCE]\n"
    "       neco mysql stop-clustering CLUSTER     (observe and report only, never act)\n"
    "       neco mysql start-clustering CLUSTER    (resume; clears the anti-flap wait)\n"
    "       neco mysql create CLUSTER --file F     (F: a clusters[] entry, YAML or JSON; also "
    "changes it)\n"
    "       neco mysql delete CLUSTER              (an API-created cluster, after "
    "stop-clustering)\n\n"
    "Every action takes --admin URL | --socket PATH.";

std::string join(const json& list) {
  std::string out;
  if (!list.is_array()) return "-";
  for (const auto& v : list) {
    if (!out.empty()) out += ",";
    out += v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out.empty() ? "-" : out;
}

std::string str(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "-";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

void print_table(const json& clusters) {
  std::printf("%-16s %-15s %-12s %-20s %-20s %-12s %-6s %s\n", "CLUSTER", "STATE", "PRIMARY",
              "REPLICAS", "READY", "ERRANT", "PAUSED", "LAST OPERATION");
  for (const auto& c : clusters) {
    std::string last = "-";
    if (c.contains("last_operation") && c["last_operation"].is_object()) {
      const auto& l = c["last_operation"];
      last = fmt::format("{} ({} ms){}", str(l, "kind"), str(l, "duration_ms"),
                         l["error"].is_string() ? ": " + l["error"].get<std::string>() : "");
    }
    std::printf("%-16s %-15s %-12s %-20s %-20s %-12s %-6s %s\n", str(c, "name").c_str(),
                str(c, "state").c_str(), str(c, "primary").c_str(),
                join(c.value("replicas", json())).c_str(),
                join(c.value("ready_replicas", json())).c_str(),
                join(c.value("errant_replicas", json())).c_str(),
                c.value("paused", false) ? "yes" : "no", last.c_str());
    if (c.contains("reason")) std::printf("  %s\n", str(c, "reason").c_str());
    if (c.contains("instance_errors") && c["instance_errors"].is_object()) {
      for (const auto& [name, why] : c["instance_errors"].items()) {
        std::printf("  %s: %s\n", name.c_str(),
                    why.is_string() ? why.get<std::string>().c_str() : "-");
      }
    }
  }
}

// Parses `neco mysql ACTION` options with up to one CLUSTER operand.
bool parse(const std::string& action, po::options_description& desc,
           const std::vector<std::string>& args, bool cluster_required, po::variables_map& vm,
           std::string& cluster, int& code) {
  desc.add_options()("cluster", po::value<std::string>(), "cluster name");
  po::positional_options_description pos;
  pos.add("cluster", 1);
  cli::add_target_options(desc);
  const std::string command = "mysql " + action;
  if (!cli::parse(command, kSynopsis, desc, &pos, args, vm, code)) return false;
  if (vm.count("cluster") != 0) cluster = vm["cluster"].as<std::string>();
  if (cluster_required && cluster.empty()) {
    code = cli::usage_error(command, "CLUSTER is missing");
    return false;
  }
  return true;
}

int status(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("json", "print the agent's JSON");
  po::variables_map vm;
  std::string cluster;
  int code = kOk;
  if (!parse("status", desc, args, false, vm, cluster, code)) return code;
  json doc;
  const std::string path = cluster.empty() ? kRoot : std::string(kRoot) + "/" + cluster;
  if (!cli::fetch_json(cli::target_from(vm), "GET", path, doc)) return kFailed;
  if (vm.count("json") != 0) {
    std::printf("%s\n", doc.dump(2).c_str());
    return kOk;
  }
  print_table(cluster.empty() ? doc.value("clusters", json::array()) : json::array({doc}));
  return kOk;
}

int switchover(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("to", po::value<std::string>(), "the new primary (default: a ready replica)");
  po::variables_map vm;
  std::string cluster;
  int code = kOk;
  if (!parse("switchover", desc, args, true, vm, cluster, code)) return code;
  json body = json::object();
  if (vm.count("to") != 0) body["to"] = vm["to"].as<std::string>();
  json doc;
  if (!cli::fetch_json(cli::target_from(vm), "POST",
                       std::string(kRoot) + "/" + cluster + "/switchover", doc, body.dump())) {
    return kFailed;
  }
  std::printf("switchover of %s to %s requested\n", cluster.c_str(),
              str(doc, "switchover_to").c_str());
  return kOk;
}

int clustering(const std::vector<std::string>& args, bool stop) {
  const std::string action = stop ? "stop-clustering" : "start-clustering";
  po::options_description desc("Options");
  po::variables_map vm;
  std::string cluster;
  int code = kOk;
  if (!parse(action, desc, args, true, vm, cluster, code)) return code;
  json doc;
  if (!cli::fetch_json(cli::target_from(vm), "POST",
                       std::string(kRoot) + "/" + cluster + "/" + action, doc)) {
    return kFailed;
  }
  std::printf("%s: clustering %s\n", cluster.c_str(), stop ? "stopped" : "started");
  return kOk;
}

int create(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  desc.add_options()("file,f", po::value<std::string>(),
                     "the cluster definition: instances, credentials (password files on the "
                     "controllers), policy; YAML or JSON");
  po::variables_map vm;
  std::string cluster;
  int code = kOk;
  if (!parse("create", desc, args, true, vm, cluster, code)) return code;
  if (vm.count("file") == 0) return cli::usage_error("mysql create", "--file is missing");
  const std::string file = vm["file"].as<std::string>();
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "neco mysql create: cannot read %s\n", file.c_str());
    return kFailed;
  }
  std::ostringstream text;
  text << in.rdbuf();
  json doc;
  if (!cli::fetch_json(cli::target_from(vm), "PUT", std::string(kRoot) + "/" + cluster, doc,
                       text.str())) {
    return kFailed;
  }
  std::printf("%s: %s\n", cluster.c_str(), str(doc, "result").c_str());
  return kOk;
}

int remove(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  po::variables_map vm;
  std::string cluster;
  int code = kOk;
  if (!parse("delete", desc, args, true, vm, cluster, code)) return code;
  json doc;
  if (!cli::fetch_json(cli::target_from(vm), "DELETE", std::string(kRoot) + "/" + cluster, doc)) {
    return kFailed;
  }
  std::printf("%s: deleted\n", cluster.c_str());
  return kOk;
}

int run_mysql(const std::vector<std::string>& args) {
  return cli::dispatch("mysql", kSynopsis,
                       {
                           {"status", status},
                           {"switchover", switchover},
                           {"stop-clustering", [](const auto& a) { return clustering(a, true); }},
                           {"start-clustering", [](const auto& a) { return clustering(a, false); }},
                           {"create", create},
                           {"delete", remove},
                       },
                       args);
}

}  // namespace

}  // namespace neco::mysql

NECO_REGISTER_COMMAND("mysql",  // NOLINT(cert-err58-cpp)
                      "MariaDB clusters: status, switchover, stop/start-clustering, create/delete",
                      neco::mysql::run_mysql);
