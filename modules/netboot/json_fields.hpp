// Strict reading of JSON objects for netboot's records and requests: unknown keys and wrong types
// are errors naming the key, so a typo in an admin request never silently means "default".
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "agent/util/error.hpp"

namespace neco::netboot::json_fields {

// invalid_argument unless `j` is an object whose keys are all in `known`; `what` names the
// object in the message ("ipam", "machine", ...).
Expected<void> check_object(const nlohmann::json& j, std::string_view what,
                            std::initializer_list<std::string_view> known);

// A key's value, nullopt when absent (null counts as absent); invalid_argument on a wrong type.
Expected<std::optional<std::string>> get_string(const nlohmann::json& j, std::string_view what,
                                                std::string_view key);
Expected<std::optional<std::uint32_t>> get_u32(const nlohmann::json& j, std::string_view what,
                                               std::string_view key);
Expected<std::optional<std::int64_t>> get_i64(const nlohmann::json& j, std::string_view what,
                                              std::string_view key);

// The same, with a missing key an error.
Expected<std::string> require_string(const nlohmann::json& j, std::string_view what,
                                     std::string_view key);
Expected<std::uint32_t> require_u32(const nlohmann::json& j, std::string_view what,
                                    std::string_view key);

// Parses text as JSON; invalid_argument with the parser's message (no exception escapes).
Expected<nlohmann::json> parse(std::string_view text, std::string_view what);

}  // namespace neco::netboot::json_fields
