// Clusters created through the admin API (PUT /v1/mysql/clusters/{name}) rather than the role
// file: their definitions, in the shape of a role-file clusters[] entry, live in the store under
// /neco/mysql/clusters/<name>/spec, so every controller sees them and the leader runs a loop for
// each. Parsing goes through the role file's schema and cluster_spec() so both paths accept
// exactly the same definitions; the writes are plain txns guarded by compares on the keys they
// were decided from (any controller may write; the leader follows the prefix with a watch).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/util/error.hpp"
#include "modules/mysql/mysql_module.hpp"

namespace neco::store {
class Store;
}

namespace neco::mysql {

// "/neco/mysql/clusters/": the prefix of every cluster's keys.
std::string clusters_prefix();
// Where an API-created cluster's definition is stored.
std::string spec_key(const std::string& cluster);

// Parses a definition (JSON, or YAML: JSON is YAML) for cluster `name`. The body's "name" may
// be left out; when given it must be `name`. Errors (invalid_argument) name the field:
// "body:3:5: unknown key \"instancs\" ...", "body: instances: two primaries ...".
Expected<ClusterSection> parse_definition(std::string_view text, const std::string& name);

// The canonical JSON text stored for a definition (every field, durations as "2s").
std::string definition_text(const ClusterSection& section);

struct StoredDefinition {
  std::string name;
  std::string text;  // as stored (definition_text)
  std::int64_t mod_revision = 0;
};

struct StoredDefinitions {
  std::vector<StoredDefinition> definitions;  // sorted by name
  std::int64_t revision = 0;                  // the store revision they were read at
};

// Every stored definition.
Expected<StoredDefinitions> list_definitions(store::Store& store);

enum class PutOutcome { created, changed, unchanged };

// Stores `section` (already checked by parse_definition and the password-file reads).
// failed_precondition while a failover or switchover of the cluster is in progress (a new
// definition must not change the instances under it) or when the keys changed meanwhile.
Expected<PutOutcome> put_definition(store::Store& store, const ClusterSection& section);

// Removes an API-created cluster: its definition, memory, pause flag and last failover time.
// not_found when no definition is stored; failed_precondition unless the cluster is paused
// (stop-clustering): an unpaused cluster's loop may start a failover at any moment, so only a
// pause makes "nothing is in progress" stay true until the keys are gone.
Expected<void> delete_definition(store::Store& store, const std::string& name);

}  // namespace neco::mysql
