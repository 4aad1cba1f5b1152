// The boot decision table, one row per branch, plus the hand-built client packets end to end.
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <vector>

#include "modules/netboot/boot_decision.hpp"
#include "modules/netboot/dhcp_packet.hpp"
#include "tests/unit/modules/netboot/dhcp_test_support.hpp"

namespace {

namespace nb = neco::netboot;
using nb::BootKind;

nb::BootConfig config() {
  nb::BootConfig c;
  c.ipxe_script_url = "http://10.0.0.1:8080/boot/ipxe?mac=${mac}";
  c.http_efi_x64_url = "http://10.0.0.1:8080/boot/ipxe.efi";
  c.http_efi_arm64_url = "http://10.0.0.1:8080/boot/ipxe-arm64.efi";
  c.http_efi_ia32_url = "http://10.0.0.1:8080/boot/ipxe-i386.efi";
  return c;
}

struct Request {
  std::optional<std::string> vendor_class;
  std::vector<std::uint8_t> arch;  // option 93 value, raw
  std::optional<std::vector<std::uint8_t>> user_class;
  bool option175 = false;
};

nb::Packet request(const Request& r) {
  nb::Packet p;
  p.set_message_type(nb::MessageType::discover);
  if (r.vendor_class) p.set_string_option(nb::opt::vendor_class, *r.vendor_class);
  if (!r.arch.empty()) p.options.set(nb::opt::client_arch, r.arch);
  if (r.user_class) p.options.set(nb::opt::user_class, *r.user_class);
  if (r.option175) p.options.set(nb::opt::ipxe_encapsulated, std::vector<std::uint8_t>{0x13, 1, 1});
  return p;
}

// Test data built before main(); an allocation failure there ends the test run, which is fine.
// NOLINTNEXTLINE(cert-err58-cpp)
const std::vector<std::uint8_t> kIpxe = {'i', 'P', 'X', 'E'};  // iPXE's form
// NOLINTNEXTLINE(cert-err58-cpp)
const std::vector<std::uint8_t> kIpxeList = {3, 'f', 'o', 'o', 4, 'i', 'P', 'X', 'E'};  // RFC 3004

struct Want {
  BootKind kind;
  std::string file;
  std::string vendor_class;
  std::optional<std::uint16_t> arch;
  std::string reason_has;
};

struct Row {
  const char* name;
  Request req;
  Want want;
};

}  // namespace

TEST_CASE("boot decision table", "[netboot][boot]") {
  const auto c = config();
  const Row rows[] = {
      {"iPXE user class (plain form)",
       {"PXEClient:Arch:00007:UNDI:003016", {0, 7}, kIpxe, false},
       {BootKind::ipxe_script, c.ipxe_script_url, "", std::nullopt, "user class iPXE"}},
      {"iPXE user class (RFC 3004 list)",
       {"PXEClient:Arch:00000:UNDI:002001", {0, 0}, kIpxeList, false},
       {BootKind::ipxe_script, c.ipxe_script_url, "", std::nullopt, "user class iPXE"}},
      {"iPXE option 175 without a user class",
       {"HTTPClient:Arch:00016:UNDI:003001", {0, 0x10}, std::nullopt, true},
       {BootKind::ipxe_script, c.ipxe_script_url, "", std::nullopt, "option 175"}},
      {"UEFI HTTP x64",
       {"HTTPClient:Arch:00016:UNDI:003001", {0, 0x10}, std::nullopt, false},
       {BootKind::http, c.http_efi_x64_url, "HTTPClient", 0x10, "UEFI HTTP client arch 0x10"}},
      {"UEFI HTTP arm64",
       {"HTTPClient:Arch:00019:UNDI:003000", {0, 0x13}, std::nullopt, false},
       {BootKind::http, c.http_efi_arm64_url, "HTTPClient", 0x13, "arch 0x13"}},
      {"UEFI HTTP x86 (IA32)",
       {"HTTPClient:Arch:00015:UNDI:003000", {0, 0x0F}, std::nullopt, false},
       {BootKind::http, c.http_efi_ia32_url, "HTTPClient", 0x0F, "arch 0x0F"}},
      {"UEFI HTTP arch from the vendor class when option 93 is missing",
       {"HTTPClient:Arch:00016:UNDI:003001", {}, std::nullopt, false},
       {BootKind::http, c.http_efi_x64_url, "HTTPClient", 0x10, "arch 0x10"}},
      {"UEFI HTTP with a PXE arch",
       {"HTTPClient", {0, 7}, std::nullopt, false},
       {BootKind::none, "", "", std::nullopt, "unsupported architecture 0x07"}},
      {"PXE BIOS",
       {"PXEClient:Arch:00000:UNDI:002001", {0, 0}, std::nullopt, false},
       {BootKind::tftp, "undionly.kpxe", "", 0, "PXE client arch 0x00"}},
      {"PXE EFI x64 (7)",
       {"PXEClient:Arch:00007:UNDI:003016", {0, 7}, std::nullopt, false},
       {BootKind::tftp, "ipxe.efi", "", 7, "arch 0x07"}},
      {"PXE EFI x64 (9)",
       {"PXEClient:Arch:00009:UNDI:003016", {0, 9}, std::nullopt, false},
       {BootKind::tftp, "ipxe.efi", "", 9, "arch 0x09"}},
      {"PXE EFI arm64",
       {"PXEClient:Arch:00011:UNDI:003000", {0, 0x0B}, std::nullopt, false},
       {BootKind::tftp, "ipxe-arm64.efi", "", 0x0B, "arch 0x0B"}},
      {"PXE arch from the vendor class when option 93 is missing",
       {"PXEClient:Arch:00007:UNDI:003016", {}, std::nullopt, false},
       {BootKind::tftp, "ipxe.efi", "", 7, "arch 0x07"}},
      {"PXE first known arch of several",
       {"PXEClient", {0, 6, 0, 7}, std::nullopt, false},
       {BootKind::tftp, "ipxe.efi", "", 7, "arch 0x07"}},
      {"PXE IA32 EFI is unknown",
       {"PXEClient:Arch:00006:UNDI:003016", {0, 6}, std::nullopt, false},
       {BootKind::none, "", "", std::nullopt, "PXE client with unsupported architecture 0x06"}},
      {"PXE without any architecture",
       {"PXEClient", {}, std::nullopt, false},
       {BootKind::none, "", "", std::nullopt, "without a client architecture"}},
      {"PXE with a garbled Arch field",
       {"PXEClient:Arch:0x007:UNDI", {}, std::nullopt, false},
       {BootKind::none, "", "", std::nullopt, "without a client architecture"}},
      {"no vendor class",
       {std::nullopt, {}, std::nullopt, false},
       {BootKind::none, "", "", std::nullopt, "no vendor class"}},
      {"some other vendor class",
       {"MSFT 5.0\x01", {}, std::nullopt, false},
       {BootKind::none, "", "", std::nullopt,
        "vendor class \"MSFT 5.0\\x01\" is not a network boot"}},
      {"user class other than iPXE",
       {std::nullopt, {}, std::vector<std::uint8_t>{'g', 'P', 'X', 'E'}, false},
       {BootKind::none, "", "", std::nullopt, "no vendor class"}},
  };
  for (const auto& row : rows) {
    SECTION(row.name) {
      const auto d = nb::decide_boot(request(row.req), c);
      INFO(d.reason);
      CHECK(d.kind == row.want.kind);
      CHECK(d.boot_file == row.want.file);
      CHECK(d.vendor_class == row.want.vendor_class);
      CHECK(d.arch == row.want.arch);
      CHECK(d.reason.find(row.want.reason_has) != std::string::npos);
    }
  }
}

TEST_CASE("an unconfigured branch gives an address only, naming the entry", "[netboot][boot]") {
  nb::BootConfig c;  // defaults: TFTP names only, no URLs
  const std::pair<Request, const char*> cases[] = {
      {{"PXEClient", {0, 7}, kIpxe, false}, "ipxe_script_url is not configured"},
      {{"HTTPClient", {0, 0x10}, std::nullopt, false}, "http_efi_x64_url is not configured"},
      {{"HTTPClient", {0, 0x13}, std::nullopt, false}, "http_efi_arm64_url is not configured"},
      {{"HTTPClient", {0, 0x0F}, std::nullopt, false}, "http_efi_ia32_url is not configured"},
  };
  for (const auto& [req, text] : cases) {
    const auto d = nb::decide_boot(request(req), c);
    INFO(d.reason);
    CHECK(d.kind == BootKind::none);
    CHECK(d.boot_file.empty());
    CHECK(d.vendor_class.empty());
    CHECK(d.reason.find(text) != std::string::npos);
  }
  c.tftp_bios.clear();
  const auto d = nb::decide_boot(request({"PXEClient", {0, 0}, std::nullopt, false}), c);
  CHECK(d.kind == BootKind::none);
  CHECK(d.arch == 0);
  CHECK(d.reason.find("tftp_bios is not configured") != std::string::npos);
  CHECK(nb::to_string(BootKind::ipxe_script) == "ipxe_script");
}

TEST_CASE("the hand-built client packets get their boot files", "[netboot][boot]") {
  using namespace neco::netboot::testing;
  const auto c = config();
  const auto decide = [&](const Bytes& bytes) {
    auto p = nb::parse(bytes);
    REQUIRE(p);
    return nb::decide_boot(*p, c);
  };
  auto d = decide(bios_pxe_discover());
  CHECK(d.kind == BootKind::tftp);
  CHECK(d.boot_file == "undionly.kpxe");
  d = decide(uefi_http_discover());
  CHECK(d.kind == BootKind::http);
  CHECK(d.boot_file == c.http_efi_x64_url);
  CHECK(d.vendor_class == "HTTPClient");
  d = decide(ipxe_discover());
  CHECK(d.kind == BootKind::ipxe_script);
  CHECK(d.boot_file == c.ipxe_script_url);
  d = decide(relayed_request());
  CHECK(d.kind == BootKind::none);
}
