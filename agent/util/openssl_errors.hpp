// OpenSSL reports failures on a thread-local queue; this turns the queue into one message and
// leaves it empty, so a later call never reports an earlier failure. Header-only: only code
// that already links OpenSSL includes it.
#pragma once

#include <openssl/err.h>

#include <array>
#include <string>

namespace neco {

inline std::string drain_openssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    std::array<char, 256> buf{};
    ERR_error_string_n(e, buf.data(), buf.size());
    if (!out.empty()) out += "; ";
    out += buf.data();
  }
  return out;
}

}  // namespace neco
