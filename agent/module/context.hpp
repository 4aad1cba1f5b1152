// What the core hands a module: the event loop, the worker pool, the metrics registry, the
// store (controllers only), its config and state directory, and a way to add admin routes.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "agent/config/role_config.hpp"
#include "agent/http/router.hpp"
#include "agent/util/error.hpp"

namespace neco {

class WorkerPool;
namespace metrics {
class Registry;
}
namespace store {
class Election;
class Store;
}  // namespace store

// Adds a module's routes under /v1/<module>/ so modules cannot shadow core or other routes.
class ModuleRoutes {
 public:
  ModuleRoutes(http::Router& router, std::string module)
      : router_(router), prefix_("/v1/" + std::move(module)) {}

  // Registers /v1/<module>/<path> ("" is the module's root); see http::Router::add.
  Expected<void> add(std::string_view path, std::string help, http::Handler handler,
                     bool mutates = false) {
    std::string full = prefix_;
    if (!path.empty()) full += (path.front() == '/' ? "" : "/") + std::string(path);
    return router_.add(full, std::move(help), std::move(handler), mutates);
  }

 private:
  http::Router& router_;
  std::string prefix_;
};

class ModuleContext {
 public:
  virtual ~ModuleContext() = default;

  // The agent's event loop; handlers and timers run here.
  virtual boost::asio::any_io_executor executor() = 0;
  // The bounded pool for blocking calls (see WorkerPool::run).
  virtual WorkerPool& workers() = 0;
  // The one metrics registry; declare families once, at start.
  virtual metrics::Registry& metrics() = 0;
  // The store on controllers; nullptr on plain nodes (they use the cluster API instead).
  virtual store::Store* store() = 0;
  // The leader election on controllers (fenced writes: store::Election::fenced_txn); nullptr
  // on plain nodes.
  virtual store::Election* election() { return nullptr; }
  // The core section of the role file (node identity, controller flag, ...).
  virtual const config::CoreConfig& core() const = 0;
  // <state_dir>/<module>, created with mode 0700 before start.
  virtual std::filesystem::path state_dir() const = 0;
};

}  // namespace neco
