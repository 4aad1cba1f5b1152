// Hand-built DHCP packets, byte by byte, shaped like what real clients send: each is a fixed
// header written field by field, the magic cookie, then literal option bytes.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string_view>
#include <vector>

namespace neco::netboot::testing {

using Bytes = std::vector<std::uint8_t>;

inline const std::filesystem::path kData = NETBOOT_TEST_DATA;  // NOLINT(cert-err58-cpp): test data

struct Header {
  std::uint8_t op = 1;
  std::uint8_t htype = 1;
  std::uint8_t hlen = 6;
  std::uint8_t hops = 0;
  std::uint32_t xid = 0;
  std::uint16_t secs = 0;
  std::uint16_t flags = 0;
  std::array<std::uint8_t, 4> ciaddr{}, yiaddr{}, siaddr{}, giaddr{};
  std::array<std::uint8_t, 6> mac{};
};

// The 236-byte BOOTP header and the cookie, sname and file zero.
inline Bytes header(const Header& h) {
  Bytes b;
  b.push_back(h.op);
  b.push_back(h.htype);
  b.push_back(h.hlen);
  b.push_back(h.hops);
  for (int s = 24; s >= 0; s -= 8)
    b.push_back(static_cast<std::uint8_t>(h.xid >> s));
  b.push_back(static_cast<std::uint8_t>(h.secs >> 8));
  b.push_back(static_cast<std::uint8_t>(h.secs));
  b.push_back(static_cast<std::uint8_t>(h.flags >> 8));
  b.push_back(static_cast<std::uint8_t>(h.flags));
  for (const auto* ip : {&h.ciaddr, &h.yiaddr, &h.siaddr, &h.giaddr}) {
    b.insert(b.end(), ip->begin(), ip->end());
  }
  b.insert(b.end(), h.mac.begin(), h.mac.end());
  b.resize(236, 0);  // chaddr padding (10), sname (64), file (128)
  for (const std::uint8_t c : {99, 130, 83, 99})
    b.push_back(c);
  return b;
}

// Header, options as given, then END and zero padding to 300 bytes when `end` is set: the
// exact shape serialize() produces when the options are in its order.
inline Bytes packet(const Header& h, std::initializer_list<Bytes> options, bool end = true) {
  Bytes b = header(h);
  for (const auto& o : options)
    b.insert(b.end(), o.begin(), o.end());
  if (end) {
    b.push_back(255);
    if (b.size() < 300) b.resize(300, 0);
  }
  return b;
}

// One option: code, length, value.
inline Bytes option(std::uint8_t code, std::initializer_list<std::uint8_t> value) {
  Bytes b{code, static_cast<std::uint8_t>(value.size())};
  b.insert(b.end(), value.begin(), value.end());
  return b;
}

inline Bytes text_option(std::uint8_t code, std::string_view text) {
  Bytes b{code, static_cast<std::uint8_t>(text.size())};
  b.insert(b.end(), text.begin(), text.end());
  return b;
}

inline Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes b;
  for (const auto& p : parts)
    b.insert(b.end(), p.begin(), p.end());
  return b;
}

inline Bytes read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline constexpr std::array<std::uint8_t, 6> kMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
inline constexpr std::array<std::uint8_t, 4> kGiaddr = {10, 1, 2, 1};

// A SMBIOS UUID as option 97 carries it: type 0, then 16 bytes.
inline Bytes machine_id() {
  return option(97, {0x00, 0x4c, 0x4c, 0x45, 0x44, 0x00, 0x38, 0x10, 0x80, 0x35, 0xb4, 0xc0, 0x4f,
                     0x4e, 0x38, 0x59, 0x32});
}

// The parameter request list an Intel/AMI PXE 2.1 BIOS ROM sends.
inline Bytes pxe_prl() {
  return option(55, {1,  2,  3,  5,  6,   11,  12,  13,  15,  16,  17,  18,
                     43, 54, 60, 67, 128, 129, 130, 131, 132, 133, 134, 135});
}

// DISCOVER from a BIOS PXE ROM (arch 0), broadcast flag set, options in serializer order.
inline Bytes bios_pxe_discover() {
  Header h;
  h.xid = 0x2e5d1a4c;
  h.secs = 4;
  h.flags = 0x8000;
  h.mac = kMac;
  return packet(h, {option(53, {1}), pxe_prl(), option(57, {0x04, 0xec}),
                    text_option(60, "PXEClient:Arch:00000:UNDI:002001"), option(93, {0x00, 0x00}),
                    option(94, {0x01, 0x02, 0x01}), machine_id()});
}

// DISCOVER from x64 UEFI HTTP boot (arch 0x10, vendor class HTTPClient).
inline Bytes uefi_http_discover() {
  Header h;
  h.xid = 0x9a3be001;
  h.mac = kMac;
  return packet(h, {option(53, {1}), option(55, {1, 3, 6, 15, 28, 43, 60, 67}),
                    option(57, {0x05, 0xc0}), text_option(60, "HTTPClient:Arch:00016:UNDI:003001"),
                    option(93, {0x00, 0x10}), option(94, {0x01, 0x03, 0x00}), machine_id()});
}

// DISCOVER from iPXE (x64 EFI build): user class "iPXE" in iPXE's plain form and option 175.
inline Bytes ipxe_discover() {
  Header h;
  h.xid = 0x1f0c0de5;
  h.secs = 1;
  h.mac = kMac;
  return packet(
      h, {option(53, {1}), option(55, {1,   3,   6,   7,   12,  15,  17,  26,  43,  60,  66, 67,
                                       119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203}),
          option(57, {0x05, 0xc0}), text_option(60, "PXEClient:Arch:00007:UNDI:003016"),
          option(61, {0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56}), text_option(77, "iPXE"),
          option(93, {0x00, 0x07}), option(94, {0x01, 0x03, 0x10}), machine_id(),
          option(175, {0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0x13, 0x01, 0x01, 0x15, 0x01, 0x01,
                       0x17, 0x01, 0x01, 0x18, 0x01, 0x01, 0x19, 0x01, 0x01, 0x21, 0x01, 0x01})});
}

// REQUEST forwarded by a relay: giaddr, hops 1, and option 82 (circuit id, remote id, link
// selection 10.1.3.0) that the server must echo.
inline Bytes relay_info_value() {
  return concat({text_option(1, "Gi1/0/7"), option(2, {0x00, 0x1b, 0x21, 0xaa, 0xbb, 0xcc}),
                 option(5, {10, 1, 3, 0})});
}

inline Bytes relayed_request() {
  Header h;
  h.hops = 1;
  h.xid = 0x6b8b4567;
  h.secs = 3;
  h.giaddr = kGiaddr;
  h.mac = kMac;
  const Bytes info = relay_info_value();
  Bytes opt82{82, static_cast<std::uint8_t>(info.size())};
  opt82.insert(opt82.end(), info.begin(), info.end());
  return packet(h, {option(53, {3}), text_option(12, "node-17"), option(50, {10, 1, 3, 50}),
                    option(54, {10, 0, 0, 1}), option(55, {1, 3, 6, 12, 15, 28, 42}),
                    option(61, {0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56}), opt82});
}

// INFORM from a configured host (ciaddr set).
inline Bytes inform() {
  Header h;
  h.xid = 0x00c0ffee;
  h.ciaddr = {10, 1, 3, 50};
  h.mac = kMac;
  return packet(h, {option(53, {8}), option(55, {1, 3, 6, 15, 119, 252}),
                    option(61, {0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56})});
}

// RELEASE: ciaddr and the server id, no broadcast.
inline Bytes release() {
  Header h;
  h.xid = 0x4d2f0001;
  h.ciaddr = {10, 1, 3, 50};
  h.mac = kMac;
  return packet(h, {option(53, {7}), option(54, {10, 0, 0, 1}),
                    option(61, {0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56})});
}

// DECLINE after an ARP probe found the address in use.
inline Bytes decline() {
  Header h;
  h.xid = 0x4d2f0002;
  h.mac = kMac;
  return packet(h, {option(53, {4}), option(50, {10, 1, 3, 50}), option(54, {10, 0, 0, 1}),
                    option(61, {0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56})});
}

}  // namespace neco::netboot::testing
