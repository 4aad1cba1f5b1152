// Fuzz target for the role-file parser: any bytes must yield either a config whose values obey
// the schema's ranges, or an error that starts with "FILE:LINE:COLUMN:" — never a crash, a
// hang or an escaping exception. Built with libFuzzer under clang, and with
// replay_main.cpp as a corpus replay in the ordinary test run.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agent/config/role_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto role = neco::config::parse_role_text(text, "fuzz.yaml");
  if (!role) {
    if (role.error().message.rfind("fuzz.yaml:", 0) != 0) std::abort();
    return 0;
  }
  const auto& c = role->core;
  if (c.node.name.empty() || c.admin.port < 1 || c.admin.port > 65535 || c.workers < 1 ||
      c.metrics.port < 1 || c.metrics.port > 65535 || c.state_dir.empty() ||
      c.state_dir.front() != '/') {
    std::abort();  // the schema let an invalid value through
  }
  (void)neco::config::dump_core(c).dump();
  return 0;
}
