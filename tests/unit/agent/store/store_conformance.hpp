// The Store conformance suite: written only against the Store interface so every backend
// (SQLite now, etcd later) proves the same etcd v3 semantics. Call it from a TEST_CASE; it uses
// SECTIONs, so the factory is called once per section and must return an empty store (or one
// where the keys under "/conf/" are absent and no other writer runs).
#pragma once

#include <functional>
#include <memory>

#include "agent/store/store.hpp"

namespace neco::store::testing {

using StoreFactory = std::function<std::unique_ptr<Store>()>;

void run_store_conformance(const StoreFactory& make_store);

}  // namespace neco::store::testing
