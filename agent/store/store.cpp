#include "agent/store/store.hpp"

namespace neco::store {

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  // Drop trailing 0xff bytes: no key with this prefix sorts at or above the incremented byte.
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  // Every byte was 0xff (or the prefix was empty): the range has no upper bound.
  return std::string(1, '\0');
}

bool KeyRange::contains(std::string_view k) const {
  if (range_end.empty()) return k == key;
  if (k < std::string_view(key)) return false;
  if (range_end == std::string_view("\0", 1)) return true;
  return k < std::string_view(range_end);
}

Expected<KeyValue> Store::get(const std::string& key) {
  auto r = range(RangeRequest{KeyRange::exact(key), 1});
  if (!r) return std::unexpected(r.error());
  if (r->kvs.empty()) return fail(Errc::not_found, "key '" + key + "' not found");
  return std::move(r->kvs.front());
}

Expected<int64_t> Store::put_value(std::string key, std::string value, int64_t lease) {
  auto r = put(PutRequest{std::move(key), std::move(value), lease, false});
  if (!r) return std::unexpected(r.error());
  return r->revision;
}

}  // namespace neco::store
