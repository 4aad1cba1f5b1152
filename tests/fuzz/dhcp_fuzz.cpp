// Fuzz target for the DHCPv4 codec: any bytes either fail to parse with a reason and a
// message, or parse into a packet that serializes, parses back to an equal packet (header,
// options and every typed accessor) and serializes to the same bytes again; the boot decision
// runs on it too. Built with libFuzzer under clang, and with replay_main.cpp as a corpus
// replay in the ordinary test run.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "modules/netboot/boot_decision.hpp"
#include "modules/netboot/dhcp_packet.hpp"

namespace nb = neco::netboot;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_same_typed(const nb::Packet& a, const nb::Packet& b) {
  check(a.message_type() == b.message_type());
  check(a.requested_ip() == b.requested_ip());
  check(a.server_id() == b.server_id());
  check(a.lease_time() == b.lease_time());
  check(a.renewal_time() == b.renewal_time());
  check(a.rebinding_time() == b.rebinding_time());
  check(a.client_key() == b.client_key());
  check(a.max_message_size() == b.max_message_size());
  check(a.vendor_class() == b.vendor_class());
  check(a.client_arch() == b.client_arch());
  check(a.user_classes() == b.user_classes());
  check(a.has_user_class("iPXE") == b.has_user_class("iPXE"));
  check(a.ipxe_options().has_value() == b.ipxe_options().has_value());
  check(a.link_selection() == b.link_selection());
  check(a.subnet_mask() == b.subnet_mask());
  check(a.routers() == b.routers());
  check(a.dns_servers() == b.dns_servers());
  check(a.domain_name() == b.domain_name());
  check(a.hostname() == b.hostname());
  check(a.tftp_server_name() == b.tftp_server_name());
  check(a.bootfile_name() == b.bootfile_name());
  check(a.hardware_address_string() == b.hardware_address_string());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A generous limit so the fuzzer also exercises option sizes beyond one MTU.
  const nb::ParseLimits limits{.max_size = 16384};
  auto first = nb::parse(std::span(data, size), limits);
  if (!first) {
    check(!first.error().message.empty());
    check(nb::to_string(first.error().reason) != "unknown");
    return 0;
  }
  check(first->message_type().has_value());
  const auto bytes = nb::serialize(*first);
  check(bytes.size() >= nb::Packet::kBootpMinSize);
  // Serialization never grows a parsed packet beyond what its options need: concatenated
  // values are re-split, so the size is bounded by the input plus two bytes per 255 moved out
  // of sname/file; the limit below only has to admit it.
  auto second = nb::parse(bytes, nb::ParseLimits{.max_size = SIZE_MAX});
  check(second.has_value());
  check(*first == *second);
  check_same_typed(*first, *second);
  check(nb::serialize(*second) == bytes);

  nb::BootConfig config;
  config.ipxe_script_url = "http://192.0.2.1/ipxe";
  config.http_efi_x64_url = "http://192.0.2.1/ipxe.efi";
  const auto decision = nb::decide_boot(*first, config);
  check(!decision.reason.empty());
  check((decision.kind == nb::BootKind::none) == decision.boot_file.empty());
  return 0;
}
