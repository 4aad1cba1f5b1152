// API-created cluster definitions in the store (see api_clusters.hpp).
#include "modules/mysql/api_clusters.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include "agent/config/schema.hpp"
#include "agent/store/store.hpp"
#include "modules/mysql/cluster_state.hpp"

namespace neco::mysql {

namespace {

constexpr std::string_view kSpecSuffix = "/spec";

// The mod_revision of `key` (0 when absent) and its value.
struct Seen {
  std::int64_t mod_revision = 0;
  std::optional<std::string> value;
};

Expected<Seen> read_key(store::Store& st, const std::string& key) {
  auto kv = st.get(key);
  if (kv) return Seen{kv->mod_revision, kv->value};
  if (kv.error().code == Errc::not_found) return Seen{};
  return std::unexpected(kv.error());
}

// Whether the stored memory says a failover or switchover is under way ("" when not).
Expected<std::string> in_progress(const Seen& memory, const std::string& name) {
  if (!memory.value) return std::string();
  auto m = memory_from_json(*memory.value);
  if (!m) {
    return fail(Errc::failed_precondition,
                fmt::format("cluster \"{}\": its memory in the store is unreadable: {}", name,
                            m.error().message));
  }
  if (m->failover) return std::string("a failover");
  if (m->switchover) return std::string("a switchover");
  return std::string();
}

}  // namespace

std::string clusters_prefix() {
  return "/neco/mysql/clusters/";
}

std::string spec_key(const std::string& cluster) {
  return clusters_prefix() + cluster + std::string(kSpecSuffix);
}

Expected<ClusterSection> parse_definition(std::string_view text, const std::string& name) {
  YAML::Node node;
  try {
    node = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return fail(Errc::invalid_argument, fmt::format("body:{}:{}: not JSON or YAML: {}",
                                                    e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!node.IsMap()) {
    return fail(Errc::invalid_argument,
                fmt::format("body: expected a mapping (a cluster definition), got {}",
                            config::describe_kind(node)));
  }
  if (const auto given = node["name"]; given) {
    if (!given.IsScalar() || given.Scalar() != name) {
      return fail(Errc::invalid_argument,
                  fmt::format("body: name: \"{}\" is not the cluster of the URL, \"{}\"",
                              given.IsScalar() ? given.Scalar() : "?", name));
    }
  } else {
    node["name"] = name;
  }
  ClusterSection section;
  config::Diagnostics diag("body");
  cluster_schema().parse(node, "", section, diag);
  if (!diag.ok()) return std::unexpected(diag.to_error());
  if (auto spec = cluster_spec(section, "body"); !spec) return std::unexpected(spec.error());
  return section;
}

std::string definition_text(const ClusterSection& section) {
  return cluster_schema().dump(section).dump();
}

Expected<StoredDefinitions> list_definitions(store::Store& st) {
  auto r = st.range({store::KeyRange::prefix(clusters_prefix()), 0});
  if (!r) return std::unexpected(r.error());
  StoredDefinitions out;
  out.revision = r->revision;
  const auto prefix = clusters_prefix();
  for (const auto& kv : r->kvs) {
    const std::string_view key = kv.key;
    if (key.size() <= prefix.size() + kSpecSuffix.size() || !key.ends_with(kSpecSuffix)) continue;
    const auto name = key.substr(prefix.size(), key.size() - prefix.size() - kSpecSuffix.size());
    if (name.find('/') != std::string_view::npos) continue;
    out.definitions.push_back({std::string(name), kv.value, kv.mod_revision});
  }
  return out;
}

Expected<PutOutcome> put_definition(store::Store& st, const ClusterSection& section) {
  const std::string& name = section.name;
  const std::string text = definition_text(section);
  auto spec = read_key(st, spec_key(name));
  if (!spec) return std::unexpected(spec.error());
  if (spec->value == text) return PutOutcome::unchanged;
  auto memory = read_key(st, memory_key(name));
  if (!memory) return std::unexpected(memory.error());
  if (spec->value) {
    auto busy = in_progress(*memory, name);
    if (!busy) return std::unexpected(busy.error());
    if (!busy->empty()) {
      return fail(Errc::failed_precondition,
                  fmt::format("cluster \"{}\": {} is in progress; change its definition after it "
                              "ends (GET /v1/mysql/clusters/{} shows the state)",
                              name, *busy, name));
    }
  }
  store::Txn t;
  t.compares.push_back(
      store::Compare::mod_revision(spec_key(name), store::CompareOp::equal, spec->mod_revision));
  t.compares.push_back(store::Compare::mod_revision(memory_key(name), store::CompareOp::equal,
                                                    memory->mod_revision));
  t.success.push_back(store::Op::make_put(spec_key(name), text));
  auto r = st.txn(t);
  if (!r) return std::unexpected(r.error());
  if (!r->succeeded) {
    return fail(
        Errc::failed_precondition,
        fmt::format("cluster \"{}\" changed while its definition was written; try again", name));
  }
  return spec->value ? PutOutcome::changed : PutOutcome::created;
}

Expected<void> delete_definition(store::Store& st, const std::string& name) {
  auto spec = read_key(st, spec_key(name));
  if (!spec) return std::unexpected(spec.error());
  if (!spec->value) {
    return fail(Errc::not_found, fmt::format("no API-created cluster \"{}\"", name));
  }
  auto paused = read_key(st, paused_key(name));
  if (!paused) return std::unexpected(paused.error());
  if (!paused->value) {
    return fail(Errc::failed_precondition,
                fmt::format("cluster \"{}\" is being managed; stop it first (POST "
                            "/v1/mysql/clusters/{}/stop-clustering, `neco mysql stop-clustering "
                            "{}`), then delete it",
                            name, name, name));
  }
  store::Txn t;
  t.compares.push_back(
      store::Compare::mod_revision(spec_key(name), store::CompareOp::equal, spec->mod_revision));
  t.compares.push_back(store::Compare::mod_revision(paused_key(name), store::CompareOp::equal,
                                                    paused->mod_revision));
  for (const auto& key :
       {spec_key(name), memory_key(name), paused_key(name), last_failover_key(name)}) {
    t.success.push_back(store::Op::make_delete(store::KeyRange::exact(key)));
  }
  auto r = st.txn(t);
  if (!r) return std::unexpected(r.error());
  if (!r->succeeded) {
    return fail(Errc::failed_precondition,
                fmt::format("cluster \"{}\" changed while it was being deleted; try again", name));
  }
  return {};
}

}  // namespace neco::mysql
