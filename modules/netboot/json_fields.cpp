#include "modules/netboot/json_fields.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <utility>

namespace neco::netboot::json_fields {
namespace {

const nlohmann::json* find(const nlohmann::json& j, std::string_view key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

}  // namespace

Expected<void> check_object(const nlohmann::json& j, std::string_view what,
                            std::initializer_list<std::string_view> known) {
  if (!j.is_object()) {
    return fail(Errc::invalid_argument, fmt::format("{}: expected a JSON object, got {}", what,
                                                    std::string_view(j.type_name())));
  }
  for (const auto& [key, value] : j.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return fail(Errc::invalid_argument, fmt::format("{}: unknown key '{}'", what, key));
    }
  }
  return {};
}

Expected<std::optional<std::string>> get_string(const nlohmann::json& j, std::string_view what,
                                                std::string_view key) {
  const auto* v = find(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) {
    return fail(Errc::invalid_argument, fmt::format("{}: '{}' must be a string", what, key));
  }
  return v->get<std::string>();
}

Expected<std::optional<std::uint32_t>> get_u32(const nlohmann::json& j, std::string_view what,
                                               std::string_view key) {
  const auto* v = find(j, key);
  if (v == nullptr) return std::nullopt;
  // Parsed text gives unsigned numbers, but a json built in C++ from `1` holds a signed one.
  if (v->is_number_unsigned() &&
      v->get<std::uint64_t>() <= std::numeric_limits<std::uint32_t>::max()) {
    return static_cast<std::uint32_t>(v->get<std::uint64_t>());
  }
  if (v->is_number_integer() && !v->is_number_unsigned() && v->get<std::int64_t>() >= 0 &&
      v->get<std::int64_t>() <= std::numeric_limits<std::uint32_t>::max()) {
    return static_cast<std::uint32_t>(v->get<std::int64_t>());
  }
  return fail(Errc::invalid_argument,
              fmt::format("{}: '{}' must be an integer from 0 to 4294967295", what, key));
}

Expected<std::optional<std::int64_t>> get_i64(const nlohmann::json& j, std::string_view what,
                                              std::string_view key) {
  const auto* v = find(j, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_integer() &&
      (!v->is_number_unsigned() ||
       v->get<std::uint64_t>() <=
           static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))) {
    return v->get<std::int64_t>();
  }
  return fail(Errc::invalid_argument, fmt::format("{}: '{}' must be an integer", what, key));
}

Expected<std::string> require_string(const nlohmann::json& j, std::string_view what,
                                     std::string_view key) {
  auto v = get_string(j, what, key);
  if (!v) return std::unexpected(v.error());
  if (!*v) return fail(Errc::invalid_argument, fmt::format("{}: '{}' is required", what, key));
  return std::move(**v);
}

Expected<std::uint32_t> require_u32(const nlohmann::json& j, std::string_view what,
                                    std::string_view key) {
  auto v = get_u32(j, what, key);
  if (!v) return std::unexpected(v.error());
  if (!*v) return fail(Errc::invalid_argument, fmt::format("{}: '{}' is required", what, key));
  return **v;
}

Expected<nlohmann::json> parse(std::string_view text, std::string_view what) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return fail(Errc::invalid_argument, fmt::format("{}: not valid JSON", what));
  }
  return j;
}

}  // namespace neco::netboot::json_fields
