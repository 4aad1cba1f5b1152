#include "agent/util/error.hpp"

namespace neco {

std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_argument:
      return "invalid_argument";
    case Errc::not_found:
      return "not_found";
    case Errc::already_exists:
      return "already_exists";
    case Errc::failed_precondition:
      return "failed_precondition";
    case Errc::unavailable:
      return "unavailable";
    case Errc::deadline_exceeded:
      return "deadline_exceeded";
    case Errc::compacted:
      return "compacted";
    case Errc::cancelled:
      return "cancelled";
    case Errc::permission_denied:
      return "permission_denied";
    case Errc::internal:
      return "internal";
  }
  return "internal";
}

}  // namespace neco
