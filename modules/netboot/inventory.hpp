// The machine inventory in the store: IPAM config, machines keyed by serial, each rack's index
// claims, and an audit log written in the same txn as every mutation. Built only on the Store
// interface (SQLite or etcd). Every method is synchronous and may block: call it from a worker.
//
// Key layout under the prefix (default "/neco/netboot/"):
//   ipam                          IpamConfig JSON
//   machines/<serial>             Machine JSON
//   index/<rack:010>/<index:010>  serial: the claim on an index in a rack (create-only)
//   machine_count                 number of machines, decimal; every register/remove writes it,
//                                 which is how an IPAM change sees a racing registration
//   audit/<unix µs:020>-<8 hex>   AuditEntry JSON, time-ordered
//   templates/<role>              BootTemplate JSON (templates.hpp)
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/store/store.hpp"
#include "agent/util/error.hpp"
#include "modules/netboot/ipam.hpp"
#include "modules/netboot/machine.hpp"
#include "modules/netboot/templates.hpp"

namespace neco::netboot {

// One mutation: who did what to which machine, when, and the record before and after (null
// when there was none: register has no before, remove no after).
struct AuditEntry {
  std::string id;             // the key's last part: time-ordered and unique
  std::int64_t revision = 0;  // store revision of the mutation (the key's create revision)
  std::int64_t time = 0;      // unix seconds
  std::string who;
  // put_ipam, register, set_state, update, remove, prune_audit, put_template, remove_template
  std::string action;
  std::string serial;  // the machine, empty for other actions
  nlohmann::json before;
  nlohmann::json after;
};
nlohmann::json to_json(const AuditEntry& entry);

struct AuditQuery {
  std::optional<std::int64_t> since;  // unix seconds, inclusive
  std::optional<std::int64_t> until;  // unix seconds, exclusive
  std::optional<std::string> serial;
  std::optional<std::string> action;
  std::size_t limit = 100;   // at most this many entries, 0 for all
  bool newest_first = true;  // order (and which end `limit` keeps)
};
// From URL query parameters: since, until (unix seconds), serial, action, limit, order
// ("newest" or "oldest"); unknown parameters are errors.
Expected<AuditQuery> audit_query_from_params(const std::map<std::string, std::string>& params);

// Runs one write txn. The default is the store's txn; a leader passes its fenced_txn so a
// deposed leader's writes fail (that failure comes back as the method's error).
using TxnRunner = std::function<Expected<store::TxnResponse>(const store::Txn&)>;

// Adds one audit entry (at `now`, under `audit_prefix`) to `txn` with a compare that its key is
// still free, in the format Inventory::audit reads. For the other netboot records (boot assets)
// so their mutations land in the same log, in the same txn as the change. `serial` is empty when
// the entry is not about a machine.
void add_audit_entry(store::Txn& txn, std::string_view audit_prefix,
                     std::chrono::system_clock::time_point now, std::string_view who,
                     std::string_view action, std::string_view serial, nlohmann::json before,
                     nlohmann::json after);

struct InventoryOptions {
  std::string prefix = "/neco/netboot/";
  TxnRunner txn;                                                 // empty: store.txn
  std::function<std::chrono::system_clock::time_point()> clock;  // empty: system_clock::now
  int max_attempts = 100;  // rounds of read-compute-txn under contention before giving up
};

class Inventory {
 public:
  using Options = InventoryOptions;

  // `store` must outlive the inventory.
  explicit Inventory(store::Store& store, Options options = {});

  // The IPAM config; not_found before the first put.
  Expected<IpamConfig> get_ipam();
  // Validates and stores the config. failed_precondition while any machine exists; the check
  // and the write are one txn. Putting the same config again changes nothing.
  Expected<IpamConfig> put_ipam(const IpamConfig& config, std::string_view who);

  // Registers a machine: picks the lowest free index in its rack (the boot index for role
  // "boot"), computes its addresses, stores it as uninitialized. already_exists for a known
  // serial or a second boot server in a rack, failed_precondition without IPAM or when the
  // rack is full, invalid_argument for a bad spec or a rack beyond the pools.
  Expected<Machine> register_machine(const MachineSpec& spec, std::string_view who);

  // One machine; not_found if unknown.
  Expected<Machine> get(std::string_view serial);
  // Every machine the filter matches, ordered by serial.
  Expected<std::vector<Machine>> query(const MachineFilter& filter);

  // Moves a machine along the lifecycle; failed_precondition listing the allowed states when
  // the table forbids it. Asking for the state it is in changes nothing (and logs nothing).
  Expected<Machine> set_state(std::string_view serial, MachineState state, std::string_view who);
  // Changes labels and/or retire date; an update that changes nothing writes nothing.
  Expected<Machine> update(std::string_view serial, const MachineUpdate& update,
                           std::string_view who);
  // Removes a retired machine (failed_precondition in any other state), freeing its index.
  Expected<void> remove(std::string_view serial, std::string_view who);

  // Boot templates by role. put validates (templates.hpp), stamps updated/who and replaces
  // any template of the role; storing an equal template changes nothing.
  Expected<BootTemplate> get_template(std::string_view role);
  Expected<std::vector<BootTemplate>> list_templates();
  Expected<BootTemplate> put_template(BootTemplate tpl, std::string_view who);
  Expected<void> remove_template(std::string_view role, std::string_view who);

  // The audit log, filtered.
  Expected<std::vector<AuditEntry>> audit(const AuditQuery& query);
  // Deletes audit entries older than `before` (unix seconds); returns how many. The pruning is
  // itself audited.
  Expected<std::int64_t> prune_audit(std::int64_t before, std::string_view who);

  // The store keys, for tools and tests.
  std::string ipam_key() const { return prefix_ + "ipam"; }
  std::string machine_key(std::string_view serial) const;
  std::string index_key(std::uint32_t rack, std::uint32_t index) const;
  std::string count_key() const { return prefix_ + "machine_count"; }
  std::string audit_prefix() const { return prefix_ + "audit/"; }
  std::string template_key(std::string_view role) const;

 private:
  Expected<store::TxnResponse> run(const store::Txn& txn);
  std::chrono::system_clock::time_point now() const;
  // An audit put for the txn, and a compare that the new key is free.
  void add_audit(store::Txn& txn, std::string_view who, std::string_view action,
                 std::string_view serial, nlohmann::json before, nlohmann::json after);
  Expected<std::optional<store::KeyValue>> read(const std::string& key);
  Expected<Machine> rewrite(std::string_view serial, std::string_view who, std::string_view action,
                            std::string_view what,
                            const std::function<Expected<Machine>(const Machine&)>& change);

  store::Store& store_;
  std::string prefix_;
  TxnRunner txn_;
  std::function<std::chrono::system_clock::time_point()> clock_;
  int max_attempts_;
};

}  // namespace neco::netboot
