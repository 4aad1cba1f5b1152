#include "modules/netboot/templates.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>

#include "modules/netboot/ipam.hpp"

namespace neco::netboot {

namespace {

using nlohmann::json;

// A JSON string's inside: the value with quotes, backslashes and control characters escaped.
std::string json_inner(std::string_view value) {
  std::string quoted = json(std::string(value)).dump();
  return quoted.substr(1, quoted.size() - 2);
}

std::optional<std::size_t> parse_index(std::string_view text) {
  std::size_t n = 0;
  if (text.empty() || text.size() > 3) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return n;
}

// One interface field ("", "netmask", "mask_bits", "gateway") or nullopt for an unknown one.
std::optional<std::string> interface_field(const Interface& nic, std::string_view field) {
  if (field.empty()) return format_ipv4(nic.address);
  if (field == "netmask") return format_ipv4(nic.netmask());
  if (field == "mask_bits") return std::to_string(nic.prefix_len);
  if (field == "gateway") return format_ipv4(nic.gateway);
  return std::nullopt;
}

// How a lookup failed: the name is unknown everywhere, or the machine lacks it.
enum class Miss : std::uint8_t { unknown, absent };

// The value of one placeholder. In `sample` mode (validation) any label and any NIC index
// below 64 resolve, since real machines may have them.
Expected<std::string> lookup(std::string_view name, const Machine& m, std::string_view server_url,
                             bool sample) {
  auto unknown = [&] {
    return fail(Errc::invalid_argument, fmt::format("unknown placeholder {{{{ {} }}}}", name));
  };
  if (name == "serial") return m.serial;
  if (name == "rack") return std::to_string(m.rack);
  if (name == "index_in_rack") return std::to_string(m.index_in_rack);
  if (name == "role") return m.role;
  if (name == "bmc_type") return m.bmc_type;
  if (name == "state") return std::string(to_string(m.state));
  if (name == "register_date") return std::to_string(m.register_date);
  if (name == "retire_date") return std::to_string(m.retire_date);
  if (name == "server_url") return std::string(server_url);
  if (name.starts_with("labels.")) {
    const auto key = name.substr(7);
    if (key.empty()) return unknown();
    if (auto it = m.labels.find(std::string(key)); it != m.labels.end()) return it->second;
    if (sample) return std::string("sample");
    return fail(Errc::failed_precondition,
                fmt::format("machine {} has no label \"{}\" ({{{{ {} }}}})", m.serial, key, name));
  }
  if (name.starts_with("bmc")) {
    auto rest = name.substr(3);
    if (rest == ".ipv4")
      rest = "";
    else if (rest.starts_with('.'))
      rest.remove_prefix(1);
    else
      return unknown();
    if (auto v = interface_field(m.bmc, rest)) return *v;
    return unknown();
  }
  // ipv4, netmask, mask_bits, gateway (NIC 0) and ipv4.N[.field].
  std::size_t nic = 0;
  std::string_view field;
  if (name == "ipv4") {
    field = "";
  } else if (name == "netmask" || name == "mask_bits" || name == "gateway") {
    field = name;
  } else if (name.starts_with("ipv4.")) {
    auto rest = name.substr(5);
    const auto dot = rest.find('.');
    auto n = parse_index(rest.substr(0, dot));
    if (!n) return unknown();
    nic = *n;
    field = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
    if (dot != std::string_view::npos && field.empty()) return unknown();
  } else {
    return unknown();
  }
  if (nic >= m.ipv4.size()) {
    if (sample && nic < 64) {
      if (auto v = interface_field(Interface{}, field)) return *v;
      return unknown();
    }
    if (!interface_field(Interface{}, field)) return unknown();
    return fail(Errc::failed_precondition,
                fmt::format("machine {} has {} node addresses; {{{{ {} }}}} needs more", m.serial,
                            m.ipv4.size(), name));
  }
  if (auto v = interface_field(m.ipv4[nic], field)) return *v;
  return unknown();
}

Expected<std::string> render(std::string_view text, const Machine& m, std::string_view server_url,
                             bool json_escape, bool sample) {
  std::string out;
  out.reserve(text.size() + 256);
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto open = text.find("{{", pos);
    if (open == std::string_view::npos) {
      out.append(text.substr(pos));
      break;
    }
    out.append(text.substr(pos, open - pos));
    const auto close = text.find("}}", open + 2);
    if (close == std::string_view::npos) {
      return fail(Errc::invalid_argument,
                  fmt::format("\"{{{{\" at offset {} is never closed by \"}}}}\"", open));
    }
    auto name = text.substr(open + 2, close - open - 2);
    while (!name.empty() && name.front() == ' ')
      name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ')
      name.remove_suffix(1);
    auto value = lookup(name, m, server_url, sample);
    if (!value) return value;
    out += json_escape ? json_inner(*value) : *value;
    pos = close + 2;
  }
  return out;
}

// Whether the rendered config is what its kind promises.
Expected<void> check_config(ConfigKind kind, const std::string& text) {
  if (kind == ConfigKind::ignition) {
    json doc = json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
      return fail(Errc::invalid_argument, "the rendered Ignition config is not a JSON object");
    }
    if (!doc.contains("ignition") || !doc["ignition"].is_object() ||
        !doc["ignition"].contains("version")) {
      return fail(Errc::invalid_argument,
                  "the rendered Ignition config has no \"ignition\": {\"version\": ...}");
    }
    return {};
  }
  if (!text.starts_with("#cloud-config\n") && text != "#cloud-config") {
    return fail(Errc::invalid_argument, "a cloud-config must start with a \"#cloud-config\" line");
  }
  try {
    const YAML::Node doc = YAML::Load(text);
    if (!doc.IsNull() && !doc.IsMap()) {
      return fail(Errc::invalid_argument, "the rendered cloud-config is not a YAML mapping");
    }
  } catch (const YAML::Exception& e) {
    return fail(Errc::invalid_argument,
                fmt::format("the rendered cloud-config is not YAML: {}", e.what()));
  }
  return {};
}

Machine sample_machine(std::string_view role) {
  Machine m;
  m.serial = "SAMPLE0001";
  m.rack = 0;
  m.index_in_rack = 4;
  m.role = role;
  m.bmc_type = "IPMI-2.0";
  m.register_date = 1;
  m.ipv4.push_back(Interface{0x0A450004, 26, 0x0A450001});
  m.bmc = Interface{0x0A480004, 20, 0x0A480001};
  return m;
}

}  // namespace

std::string_view to_string(ConfigKind kind) noexcept {
  return kind == ConfigKind::ignition ? "ignition" : "cloud-config";
}

std::string_view content_type(ConfigKind kind) noexcept {
  return kind == ConfigKind::ignition ? "application/json" : "text/cloud-config; charset=utf-8";
}

bool valid_template_name(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name.front())) return false;
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

json to_json(const BootTemplate& t) {
  return json{{"role", t.role},       {"kind", to_string(t.kind)},
              {"config", t.config},   {"kernel", t.kernel},
              {"initrds", t.initrds}, {"cmdline", t.cmdline},
              {"updated", t.updated}, {"who", t.who}};
}

Expected<BootTemplate> boot_template_from_json(const json& j) {
  if (!j.is_object()) return fail(Errc::invalid_argument, "a boot template is a JSON object");
  BootTemplate t;
  for (const auto& [key, value] : j.items()) {
    auto need_string = [&](std::string& into) -> Expected<void> {
      if (!value.is_string()) {
        return fail(Errc::invalid_argument, fmt::format("\"{}\" must be a string", key));
      }
      into = value.get<std::string>();
      return {};
    };
    Expected<void> ok;
    if (key == "role") {
      ok = need_string(t.role);
    } else if (key == "config") {
      ok = need_string(t.config);
    } else if (key == "kernel") {
      ok = need_string(t.kernel);
    } else if (key == "cmdline") {
      ok = need_string(t.cmdline);
    } else if (key == "kind") {
      std::string kind;
      ok = need_string(kind);
      if (ok && kind == "ignition")
        t.kind = ConfigKind::ignition;
      else if (ok && kind == "cloud-config")
        t.kind = ConfigKind::cloud_config;
      else if (ok)
        ok = fail(Errc::invalid_argument,
                  fmt::format("\"kind\" is \"{}\"; known: ignition, cloud-config", kind));
    } else if (key == "initrds") {
      if (!value.is_array()) {
        ok = fail(Errc::invalid_argument, "\"initrds\" must be an array of asset names");
      }
      for (const auto& v : value) {
        if (!ok) break;
        if (!v.is_string()) {
          ok = fail(Errc::invalid_argument, "\"initrds\" must be an array of asset names");
        } else {
          t.initrds.push_back(v.get<std::string>());
        }
      }
    } else if (key == "updated" || key == "who") {
      // Written by the store, ignored on input (a fetched template can be stored again).
    } else {
      ok = fail(Errc::invalid_argument,
                fmt::format("unknown field \"{}\" (known: role, kind, config, kernel, initrds, "
                            "cmdline)",
                            key));
    }
    if (!ok) return std::unexpected(ok.error());
  }
  return t;
}

Expected<void> validate(const BootTemplate& t) {
  if (!valid_template_name(t.role)) {
    return fail(Errc::invalid_argument,
                fmt::format("role \"{}\": 1-128 of [A-Za-z0-9._-], starting alphanumeric", t.role));
  }
  if (!valid_template_name(t.kernel)) {
    return fail(
        Errc::invalid_argument,
        fmt::format("kernel \"{}\" is not an asset name (1-128 of [A-Za-z0-9._-])", t.kernel));
  }
  for (const auto& name : t.initrds) {
    if (!valid_template_name(name)) {
      return fail(
          Errc::invalid_argument,
          fmt::format("initrd \"{}\" is not an asset name (1-128 of [A-Za-z0-9._-])", name));
    }
  }
  if (t.cmdline.find_first_of("\n\r") != std::string::npos) {
    return fail(Errc::invalid_argument, "cmdline: must be one line");
  }
  const auto sample = sample_machine(t.role);
  const std::string url = "http://192.0.2.1:10080";
  auto cmdline = render(t.cmdline, sample, url, false, true);
  if (!cmdline) return fail(Errc::invalid_argument, "cmdline: " + cmdline.error().message);
  auto config = render(t.config, sample, url, t.kind == ConfigKind::ignition, true);
  if (!config) return fail(Errc::invalid_argument, "config: " + config.error().message);
  if (auto ok = check_config(t.kind, *config); !ok) {
    return fail(Errc::invalid_argument, "config: " + ok.error().message);
  }
  return {};
}

Expected<std::string> render_text(std::string_view text, const Machine& machine,
                                  std::string_view server_url, bool json_escape) {
  return render(text, machine, server_url, json_escape, false);
}

Expected<std::string> render_config(const BootTemplate& t, const Machine& machine,
                                    std::string_view server_url) {
  auto out = render(t.config, machine, server_url, t.kind == ConfigKind::ignition, false);
  if (!out) return out;
  if (auto ok = check_config(t.kind, *out); !ok) {
    return fail(Errc::failed_precondition,
                fmt::format("the template of role {} rendered for {}: {}", t.role, machine.serial,
                            ok.error().message));
  }
  return out;
}

Expected<std::string> machine_ipxe_script(const BootTemplate& t, const Machine& machine,
                                          std::string_view server_url) {
  auto cmdline = render(t.cmdline, machine, server_url, false, false);
  if (!cmdline) return cmdline;
  const std::string base = fmt::format("{}/boot/machines/{}", server_url, machine.serial);
  std::string kernel_args;
  // EFI stub kernels find their initrds by these names (iPXE names each image by its URL's
  // last segment).
  for (const auto& name : t.initrds)
    kernel_args += " initrd=" + name;
  if (!cmdline->empty()) kernel_args += " " + *cmdline;
  if (t.kind == ConfigKind::ignition) {
    kernel_args += fmt::format(" ignition.config.url={}/config", base);
  } else {
    kernel_args += fmt::format(" ds=nocloud-net;s={}/", base);
  }
  std::string s = "#!ipxe\n";
  s += fmt::format("echo neco: booting {} (role {}, rack {})\n", machine.serial, machine.role,
                   machine.rack);
  s +=
      fmt::format("kernel {}/boot/assets/{}{} || goto failed\n", server_url, t.kernel, kernel_args);
  for (const auto& name : t.initrds)
    s += fmt::format("initrd {}/boot/assets/{} || goto failed\n", server_url, name);
  s += "boot || goto failed\n";
  s += ":failed\necho neco: boot failed, retrying in 10 s\nsleep 10\n";
  s += fmt::format("chain --autofree {}/boot/ipxe.ipxe\n", server_url);
  return s;
}

std::string entry_ipxe_script(std::string_view server_url) {
  return fmt::format(
      "#!ipxe\n"
      ":retry\n"
      "chain --autofree {}/boot/machines/${{serial:uristring}}/ipxe || goto failed\n"
      ":failed\n"
      "echo neco: no boot script for serial ${{serial}}, retrying in 10 s\n"
      "sleep 10\n"
      "goto retry\n",
      server_url);
}

std::string waiting_ipxe_script(std::string_view server_url, std::string_view why,
                                int retry_seconds) {
  std::string clean;
  for (char c : why)
    clean += (c == '\n' || c == '\r' || c == '$') ? ' ' : c;
  return fmt::format(
      "#!ipxe\n"
      "echo neco: {}\n"
      "echo neco: retrying in {} s\n"
      "sleep {}\n"
      "chain --autofree {}/boot/ipxe.ipxe\n",
      clean, retry_seconds, retry_seconds, server_url);
}

}  // namespace neco::netboot
