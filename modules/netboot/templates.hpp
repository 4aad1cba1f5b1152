// Boot templates: per machine role, what a booting machine loads (kernel and initrd assets, a
// kernel command line) and the boot config it is handed (Ignition JSON or cloud-config),
// rendered with the machine's own fields. Pure: the inventory stores them, the boot server
// renders them.
//
// Placeholders are `{{ name }}` (spaces optional). Names:
//   serial rack index_in_rack role bmc_type state register_date retire_date
//   ipv4            first node address      ipv4.N            address of NIC N (0-based)
//   netmask mask_bits gateway (of NIC 0)    ipv4.N.netmask / .mask_bits / .gateway
//   bmc.ipv4  bmc.netmask  bmc.mask_bits  bmc.gateway
//   labels.KEY      a label (a machine without it fails to render, naming the label)
//   server_url      the boot server that answers, e.g. http://10.69.0.3:10080
// An unknown name is refused when the template is stored, not when a machine boots: storing
// renders the template against a sample machine and checks the result (JSON for Ignition, a
// "#cloud-config" YAML document for cloud-config). In Ignition templates each value is
// inserted JSON-escaped, so a value cannot break out of the string it sits in.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "agent/util/error.hpp"
#include "modules/netboot/machine.hpp"

namespace neco::netboot {

enum class ConfigKind : std::uint8_t { ignition, cloud_config };
std::string_view to_string(ConfigKind kind) noexcept;  // "ignition", "cloud-config"
std::string_view content_type(ConfigKind kind) noexcept;

struct BootTemplate {
  std::string role;  // the machines' role it applies to
  ConfigKind kind = ConfigKind::ignition;
  std::string config;                // the boot config template
  std::string kernel;                // asset name of the kernel
  std::vector<std::string> initrds;  // asset names, in load order
  std::string cmdline;               // kernel parameters (a template too)
  std::int64_t updated = 0;          // unix seconds, set when stored
  std::string who;                   // who stored it
  friend bool operator==(const BootTemplate&, const BootTemplate&) = default;
};

// {"role", "kind", "config", "kernel", "initrds", "cmdline", "updated", "who"}; reading takes
// only role, kind, config, kernel, initrds and cmdline (unknown fields are errors).
nlohmann::json to_json(const BootTemplate& t);
Expected<BootTemplate> boot_template_from_json(const nlohmann::json& j);

// Whether a role or asset name is well formed (1-128 of [A-Za-z0-9._-], alphanumeric first).
bool valid_template_name(std::string_view name);

// Checks the fields and renders both templates against a sample machine: invalid_argument
// naming the field and the problem (unknown placeholder, unclosed "{{", config that is not
// JSON / not cloud-config, bad asset name).
Expected<void> validate(const BootTemplate& t);

// Renders `text` for `machine`; `json_escape` for values inside JSON strings.
Expected<std::string> render_text(std::string_view text, const Machine& machine,
                                  std::string_view server_url, bool json_escape);

// The machine's boot config, checked like validate() checks the sample.
Expected<std::string> render_config(const BootTemplate& t, const Machine& machine,
                                    std::string_view server_url);

// The machine's iPXE script: kernel (with initrd= names for EFI stubs, the rendered command
// line and where its config is), initrds, boot. `server_url` has no trailing slash.
Expected<std::string> machine_ipxe_script(const BootTemplate& t, const Machine& machine,
                                          std::string_view server_url);

// The script every iPXE client fetches first: chains to its per-serial script, retrying while
// the server is unreachable or the machine is not registered yet.
std::string entry_ipxe_script(std::string_view server_url);

// The script answered to a machine that cannot boot yet (unknown serial, no template for its
// role): prints why and retries after `retry_seconds`.
std::string waiting_ipxe_script(std::string_view server_url, std::string_view why,
                                int retry_seconds);

}  // namespace neco::netboot
