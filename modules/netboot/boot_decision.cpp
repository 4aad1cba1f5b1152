#include "modules/netboot/boot_decision.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <span>
#include <vector>

namespace neco::netboot {

namespace {

constexpr std::string_view kHttpClient = "HTTPClient";
constexpr std::string_view kPxeClient = "PXEClient";

struct Row {
  std::uint16_t arch;
  BootKind kind;
  std::string BootConfig::*file;
  std::string_view what;  // names the config entry in reasons
};

constexpr std::array kHttpRows = {
    Row{arch::x64_uefi_http, BootKind::http, &BootConfig::http_efi_x64_url, "http_efi_x64_url"},
    Row{arch::arm64_uefi_http, BootKind::http, &BootConfig::http_efi_arm64_url,
        "http_efi_arm64_url"},
    Row{arch::x86_uefi_http, BootKind::http, &BootConfig::http_efi_ia32_url, "http_efi_ia32_url"},
};

constexpr std::array kPxeRows = {
    Row{arch::x86_bios, BootKind::tftp, &BootConfig::tftp_bios, "tftp_bios"},
    Row{arch::x64_uefi, BootKind::tftp, &BootConfig::tftp_efi_x64, "tftp_efi_x64"},
    Row{arch::x64_uefi_alt, BootKind::tftp, &BootConfig::tftp_efi_x64, "tftp_efi_x64"},
    Row{arch::arm64_uefi, BootKind::tftp, &BootConfig::tftp_efi_arm64, "tftp_efi_arm64"},
};

// "PXEClient:Arch:00007:UNDI:003016" → 7 (PXE spec; UEFI HTTP uses the same layout).
std::optional<std::uint16_t> arch_from_vendor_class(std::string_view vc) {
  constexpr std::string_view key = ":Arch:";
  const auto at = vc.find(key);
  if (at == std::string_view::npos || vc.size() < at + key.size() + 5) return std::nullopt;
  unsigned value = 0;
  for (const char c : vc.substr(at + key.size(), 5)) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 0xFFFF) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

// A client-sent string for a log line: printable ASCII kept, the rest escaped, 64 bytes at most.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (const char c : s.substr(0, 64)) {
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      out += c;
    } else {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    }
  }
  out += s.size() > 64 ? "\"…" : "\"";
  return out;
}

std::string arch_list(const std::vector<std::uint16_t>& arches) {
  std::string out;
  for (const auto a : arches)
    out += fmt::format("{}0x{:02X}", out.empty() ? "" : ",", a);
  return out;
}

BootDecision pick(const Packet& request, const BootConfig& config, std::span<const Row> rows,
                  std::string_view client, std::string_view vendor_class_reply) {
  std::vector<std::uint16_t> arches = request.client_arch();
  if (arches.empty()) {
    if (const auto a = arch_from_vendor_class(*request.vendor_class())) arches.push_back(*a);
  }
  BootDecision d;
  if (arches.empty()) {
    d.reason = fmt::format("{} without a client architecture (option 93)", client);
    return d;
  }
  for (const auto a : arches) {
    const auto row =
        std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.arch == a; });
    if (row == rows.end()) continue;
    d.arch = a;
    const std::string& file = config.*(row->file);
    if (file.empty()) {
      d.reason = fmt::format("{} arch 0x{:02X}: {} is not configured", client, a, row->what);
      return d;
    }
    d.kind = row->kind;
    d.boot_file = file;
    d.vendor_class = std::string(vendor_class_reply);
    d.reason = fmt::format("{} arch 0x{:02X}", client, a);
    return d;
  }
  d.reason = fmt::format("{} with unsupported architecture {}", client, arch_list(arches));
  return d;
}

}  // namespace

std::string_view to_string(BootKind kind) noexcept {
  switch (kind) {
    case BootKind::none:
      return "none";
    case BootKind::ipxe_script:
      return "ipxe_script";
    case BootKind::tftp:
      return "tftp";
    case BootKind::http:
      return "http";
  }
  return "unknown";
}

BootDecision decide_boot(const Packet& request, const BootConfig& config) {
  // iPXE first: its requests also carry PXEClient/HTTPClient and an arch, and answering those
  // with ipxe.efi again would chainload forever.
  const bool ipxe_user_class = request.has_user_class("iPXE");
  if (ipxe_user_class || request.ipxe_options()) {
    BootDecision d;
    const std::string_view why = ipxe_user_class ? "user class iPXE" : "option 175";
    if (config.ipxe_script_url.empty()) {
      d.reason = fmt::format("iPXE client ({}): ipxe_script_url is not configured", why);
      return d;
    }
    d.kind = BootKind::ipxe_script;
    d.boot_file = config.ipxe_script_url;
    d.reason = fmt::format("iPXE client ({})", why);
    return d;
  }
  const auto vc = request.vendor_class();
  if (vc && vc->starts_with(kHttpClient)) {
    return pick(request, config, kHttpRows, "UEFI HTTP client", kHttpClient);
  }
  if (vc && vc->starts_with(kPxeClient)) return pick(request, config, kPxeRows, "PXE client", {});
  BootDecision d;
  d.reason = vc ? fmt::format("vendor class {} is not a network boot client", quoted(*vc))
                : std::string("no vendor class: not a network boot client");
  return d;
}

}  // namespace neco::netboot
