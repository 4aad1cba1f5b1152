// The module registry: a list of factories filled by one registration line per module. Nothing
// is constructed at static-initialisation time; instances are built after the role file is read.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/module/module.hpp"
#include "agent/util/error.hpp"

namespace neco {

using ModuleFactory = std::unique_ptr<Module> (*)();

class ModuleRegistry {
 public:
  // The process-wide registry (a function-local static: no initialisation-order hazards).
  static ModuleRegistry& instance();

  // Records a factory; always returns true so it can initialise a static. Duplicates are
  // remembered and reported by check(), because static initialisation cannot fail cleanly.
  bool add(const char* name, ModuleFactory factory);

  // Fails when two modules registered the same name (a build defect: fatal at startup).
  Expected<void> check() const;

  // Registered names, sorted.
  std::vector<std::string> names() const;

  bool contains(std::string_view name) const;

  // Builds a fresh instance; not_found lists the registered names.
  Expected<std::unique_ptr<Module>> create(std::string_view name) const;

  // Removes a registration (tests only).
  void remove(std::string_view name);

 private:
  struct Entry {
    std::string name;
    ModuleFactory factory;
  };
  std::vector<Entry> entries_;
  std::vector<std::string> duplicates_;
};

}  // namespace neco

// One line at the end of a module's .cpp: NECO_REGISTER_MODULE(exporter, ExporterModule);
// Registration is static initialisation by design: only bad_alloc can escape add(), and that
// terminates the process, which is all that could be done about it anyway (cert-err58-cpp).
#define NECO_REGISTER_MODULE(NAME, TYPE)                                                          \
  [[maybe_unused]] static const bool neco_module_registered_##NAME = /* NOLINT(cert-err58-cpp) */ \
      ::neco::ModuleRegistry::instance().add(                                                     \
          #NAME, []() -> std::unique_ptr<::neco::Module> { return std::make_unique<TYPE>(); })
