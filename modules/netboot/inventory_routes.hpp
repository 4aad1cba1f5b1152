// The admin routes over the machine inventory (/v1/netboot/machines..., ipam, audit): JSON in
// and out, every store call on the worker pool, Errc mapped to one HTTP status each. Kept apart
// from the module class so the routes can be driven in tests without sockets or a module.
//
// Routes (under /v1/netboot/):
//   GET    machines                  filters: serial, rack, role, state, labels=k=v,..., address
//   POST   machines                  a MachineSpec or an array of them (see below)
//   GET    machines/{serial}
//   PUT    machines/{serial}         a MachineUpdate: labels merge (null removes), retire_date
//   DELETE machines/{serial}         only a retired machine
//   PUT    machines/{serial}/state   {"state": "healthy"}
//   GET    ipam
//   PUT    ipam                      an IpamConfig
//   GET    templates                 every role's boot template (templates.hpp)
//   GET    templates/{role}
//   PUT    templates/{role}          a BootTemplate; refused (400) unless it renders
//   DELETE templates/{role}
//   GET    audit                     since, until, serial, action, limit, order
//
// Status mapping: invalid_argument 400, not_found 404, already_exists and failed_precondition
// 409 (as the cluster API does), unavailable and cancelled 503, deadline_exceeded 504, others
// 500; the body is the uniform {"error", "message"}.
//
// POST machines with an array checks every spec first and refuses the whole request (400,
// nothing registered) if any is malformed or a serial repeats; then registers each one
// independently. The answer lists a result per item; when any failed, its status is that of
// the first failure and "message" says how many were registered.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "agent/module/context.hpp"

namespace neco {
class WorkerPool;
namespace store {
class Store;
}
}  // namespace neco

namespace neco::netboot {

class Inventory;

struct InventoryRoutesContext {
  // The inventory; null when this agent has none (not a controller, or not started). Called on
  // the event loop for each request.
  std::function<std::shared_ptr<Inventory>()> inventory;
  // The pool store calls run on; null when the module is not running.
  std::function<WorkerPool*()> workers;
  // How long one store call may take before the request answers 504.
  std::chrono::milliseconds deadline = std::chrono::seconds(15);
};

// An inventory over `store` with the default options, for the module (so the module class
// needs only this header). `store` must outlive it.
std::shared_ptr<Inventory> make_inventory(store::Store& store);

// Adds the routes above; a route that cannot be added is a bug (duplicate), logged.
void add_inventory_routes(ModuleRoutes& routes, InventoryRoutesContext ctx);

// Who a request acts as in the audit log: the verified client certificate's name, else
// "admin" (with "@peer" for TCP peers).
std::string requester(const http::Request& request);

}  // namespace neco::netboot
