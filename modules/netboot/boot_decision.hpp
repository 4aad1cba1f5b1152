// What a booting client gets to load, decided from its DHCP request alone: a pure function of
// the request and a small config, so every branch of the table is a unit test.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "modules/netboot/dhcp_packet.hpp"

namespace neco::netboot {

// Client system architecture types (option 93, IANA "Processor Architecture Types").
namespace arch {
inline constexpr std::uint16_t x86_bios = 0x00;
inline constexpr std::uint16_t x86_uefi = 0x06;  // 32-bit (IA32) UEFI
inline constexpr std::uint16_t x64_uefi = 0x07;
inline constexpr std::uint16_t x64_uefi_alt = 0x09;  // "EBC" in IANA's list; x64 firmware sends it
inline constexpr std::uint16_t arm64_uefi = 0x0B;
inline constexpr std::uint16_t x86_uefi_http = 0x0F;
inline constexpr std::uint16_t x64_uefi_http = 0x10;
inline constexpr std::uint16_t arm64_uefi_http = 0x13;
}  // namespace arch

// Where the boot images are. An empty entry switches its branch off: such clients get an
// address and no boot file, with a reason saying which entry is missing.
struct BootConfig {
  // iPXE script for clients already running iPXE (ends the chainload loop).
  std::string ipxe_script_url;
  // TFTP file names (the reply's `file` field; siaddr names the TFTP server).
  std::string tftp_bios = "undionly.kpxe";
  std::string tftp_efi_x64 = "ipxe.efi";
  std::string tftp_efi_arm64 = "ipxe-arm64.efi";
  // Full URLs for UEFI HTTP boot (option 67 / `file`).
  std::string http_efi_x64_url;
  std::string http_efi_arm64_url;
  // 32-bit x86 UEFI cannot run the x64 ipxe.efi, so it has its own (usually empty) entry.
  std::string http_efi_ia32_url;
};

enum class BootKind : std::uint8_t {
  none,         // address only: not a boot client, unknown architecture, or not configured
  ipxe_script,  // the client runs iPXE: hand it the script URL
  tftp,         // PXE ROM: TFTP file name, next-server in siaddr
  http,         // UEFI HTTP boot: URL, and option 60 "HTTPClient" in the reply
};

std::string_view to_string(BootKind kind) noexcept;

struct BootDecision {
  BootKind kind = BootKind::none;
  std::string boot_file;              // TFTP file name or URL; empty for none
  std::string vendor_class;           // option 60 to put in the reply; empty = none
  std::optional<std::uint16_t> arch;  // the architecture the decision used, if any
  std::string reason;                 // one line for logs and /status, always set

  friend bool operator==(const BootDecision&, const BootDecision&) = default;
};

// The table (first match wins):
//   user class "iPXE" (77) or option 175           → ipxe_script_url
//   vendor class "HTTPClient…" and arch 0x10       → http_efi_x64_url,   60 = "HTTPClient"
//                                   arch 0x13      → http_efi_arm64_url, 60 = "HTTPClient"
//                                   arch 0x0F      → http_efi_ia32_url,  60 = "HTTPClient"
//   vendor class "PXEClient…"  and arch 0          → TFTP tftp_bios
//                                   arch 7 or 9    → TFTP tftp_efi_x64
//                                   arch 0x0B      → TFTP tftp_efi_arm64
//   anything else                                  → none, with the reason
// The architecture is the first entry of option 93 the table knows, else the "Arch:NNNNN"
// field of the vendor class string.
BootDecision decide_boot(const Packet& request, const BootConfig& config);

}  // namespace neco::netboot
