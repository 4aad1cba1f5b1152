// Fuzz target for the TFTP codec: any bytes either fail to parse with a reason and a message,
// or parse into a packet that serializes and parses back to an equal packet, serializing to the
// same bytes again. A parsed request is also negotiated: the granted block size stays within
// the limits and the reply only answers options the client sent. Built with libFuzzer under
// clang, and with replay_main.cpp as a corpus replay in the ordinary test run.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <variant>

#include "modules/netboot/tftp_packet.hpp"

namespace tftp = neco::netboot::tftp;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_negotiation(const tftp::Request& request, std::uint64_t size) {
  tftp::NegotiationLimits limits;
  auto n = tftp::negotiate(request, limits, size);
  if (!n) {
    check(!n.error().message.empty());
    return;
  }
  check(n->blksize >= 8 && n->blksize <= limits.max_blksize);
  if (n->timeout_seconds) check(*n->timeout_seconds >= 1 && *n->timeout_seconds <= 255);
  for (const auto& o : n->reply)
    check(request.option(o.name).has_value());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const tftp::ByteView bytes(data, size);
  auto parsed = tftp::parse(bytes);
  if (!parsed) {
    check(!parsed.error().message.empty());
    check(!tftp::to_string(parsed.error().reason).empty());
    return 0;
  }
  const auto first = tftp::serialize(*parsed);
  auto again = tftp::parse(first);
  check(again.has_value());
  check(*again == *parsed);
  check(tftp::serialize(*again) == first);
  if (const auto* request = std::get_if<tftp::Request>(&*parsed)) {
    check_negotiation(*request, size * 1000);
  }
  return 0;
}
