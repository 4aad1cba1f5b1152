#include "agent/module/registry.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace neco {

std::string_view to_string(HealthState state) {
  switch (state) {
    case HealthState::starting:
      return "starting";
    case HealthState::healthy:
      return "healthy";
    case HealthState::degraded:
      return "degraded";
    case HealthState::failed:
      return "failed";
    case HealthState::stopped:
      return "stopped";
  }
  return "failed";
}

ModuleRegistry& ModuleRegistry::instance() {
  static ModuleRegistry registry;
  return registry;
}

bool ModuleRegistry::add(const char* name, ModuleFactory factory) {
  if (contains(name)) {
    duplicates_.emplace_back(name);
    return true;
  }
  entries_.push_back({name, factory});
  return true;
}

Expected<void> ModuleRegistry::check() const {
  if (duplicates_.empty()) return {};
  std::string names;
  for (const auto& d : duplicates_)
    names += (names.empty() ? "" : ", ") + d;
  return fail(Errc::internal,
              fmt::format("module name registered more than once: {} (a build defect)", names));
}

std::vector<std::string> ModuleRegistry::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_)
    out.push_back(e.name);
  std::sort(out.begin(), out.end());
  return out;
}

bool ModuleRegistry::contains(std::string_view name) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const Entry& e) { return e.name == name; });
}

Expected<std::unique_ptr<Module>> ModuleRegistry::create(std::string_view name) const {
  for (const auto& e : entries_) {
    if (e.name == name) return e.factory();
  }
  const auto all = names();
  std::string list;
  for (const auto& n : all)
    list += (list.empty() ? "" : ", ") + n;
  return fail(Errc::not_found, fmt::format("unknown module '{}' (compiled-in modules: {})", name,
                                           list.empty() ? "none" : list));
}

void ModuleRegistry::remove(std::string_view name) {
  std::erase_if(entries_, [&](const Entry& e) { return e.name == name; });
}

}  // namespace neco
