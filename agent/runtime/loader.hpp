// Reading a role file into a ready-to-start configuration: the core sections plus one
// configured (not started) instance of every module the file names. Used by `neco config
// check`, by agent start and by every reload, so all three judge a file the same way.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agent/config/role_config.hpp"
#include "agent/module/module.hpp"
#include "agent/util/error.hpp"

namespace neco {

struct LoadedConfig {
  config::RoleFile role;
  std::vector<std::unique_ptr<Module>> modules;  // in role-file order, configured
};

// Parses the file and configures a fresh instance of each module; every problem in the file
// is reported at once, each as FILE:LINE:COLUMN: message.
Expected<LoadedConfig> load_config(const std::string& path);

}  // namespace neco
