// The interface every compiled-in module implements, and what the core hands it.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "agent/config/role_config.hpp"
#include "agent/util/error.hpp"

namespace neco {

class ModuleContext;
class ModuleRoutes;

// A module's health, shown in /status and /readyz and exported as a metric.
enum class HealthState { starting, healthy, degraded, failed, stopped };
std::string_view to_string(HealthState state);

struct Health {
  HealthState state = HealthState::starting;
  std::string message;  // why, when not healthy
};

class Module {
 public:
  virtual ~Module() = default;

  // The registered name; also the role-file key, logger name and /v1/<name>/ route prefix.
  virtual std::string_view name() const = 0;

  // Parses and validates the module's role-file section into its pending config. No side
  // effects: `neco config check` and reloads call it on instances that never start.
  virtual Expected<void> configure(const config::Section& section) = 0;

  // Declares the module's admin routes (called once, before start).
  virtual void add_routes(ModuleRoutes& routes) { (void)routes; }

  // Adopts the pending config and starts; must not block (long work goes to the executor
  // or the worker pool held by the context, which outlives the module).
  virtual Expected<void> start(ModuleContext& context) = 0;

  // Controllers only: this agent became the leader (term = fencing term) or lost leadership.
  virtual void on_leader(std::int64_t term) { (void)term; }
  virtual void on_follower() {}

  // Whether a changed section can be applied at runtime by reload().
  virtual bool reloadable() const { return false; }
  // Adopts the pending config while running (only called when reloadable()).
  virtual Expected<void> reload() { return fail(Errc::failed_precondition, "not reloadable"); }

  // Stops all work; after it returns the module touches nothing of the context.
  virtual void stop() = 0;

  virtual Health health() const = 0;

  // The effective config as JSON, secrets redacted (for /config).
  virtual nlohmann::json effective_config() const = 0;
};

}  // namespace neco
