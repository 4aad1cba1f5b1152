#include "agent/runtime/loader.hpp"

#include <fmt/format.h>

#include "agent/module/registry.hpp"

namespace neco {

Expected<LoadedConfig> load_config(const std::string& path) {
  if (auto ok = ModuleRegistry::instance().check(); !ok) return std::unexpected(ok.error());
  auto role = config::load_role_file(path);
  if (!role) return std::unexpected(role.error());
  LoadedConfig loaded;
  loaded.role = std::move(*role);
  config::Diagnostics diag(path);
  std::vector<std::string> errors;
  for (const auto& section : loaded.role.modules) {
    auto module = ModuleRegistry::instance().create(section.name);
    if (!module) {
      diag.error(section.mark, "modules." + section.name + ": " + module.error().message);
      continue;
    }
    if (auto ok = (*module)->configure(config::Section(section, path)); !ok) {
      errors.push_back(ok.error().message);
      continue;
    }
    loaded.modules.push_back(std::move(*module));
  }
  for (const auto& line : diag.lines())
    errors.insert(errors.begin(), line);
  if (!errors.empty()) {
    std::string text;
    for (const auto& e : errors)
      text += (text.empty() ? "" : "\n") + e;
    return fail(Errc::invalid_argument, text);
  }
  return loaded;
}

}  // namespace neco
