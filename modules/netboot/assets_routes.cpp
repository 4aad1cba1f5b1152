// The admin routes of the asset store (/v1/netboot/assets...): list, get, the chunked upload
// (PUT at an offset, commit by POST), delete. Every handler runs its blocking work on the
// worker pool; the asset store is looked up per request because routes are declared before the
// module starts.
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <fmt/format.h>

#include <boost/asio/awaitable.hpp>
#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "agent/http/request.hpp"
#include "agent/http/response.hpp"
#include "agent/module/context.hpp"
#include "agent/runtime/worker_pool.hpp"
#include "modules/netboot/assets.hpp"
#include "modules/netboot/json_fields.hpp"

namespace neco::netboot {
namespace {

namespace asio = boost::asio;
using http::Request;
using http::Response;
using http::Status;
using nlohmann::json;

constexpr auto kDeadline = std::chrono::seconds(30);
// A commit hashes and fsyncs the whole upload (hundreds of MiB).
constexpr auto kCommitDeadline = std::chrono::seconds(300);

using AssetsFn = std::function<std::shared_ptr<AssetStore>()>;
using WorkersFn = std::function<WorkerPool*()>;

using http::error_response;

Response not_running() {
  return Response::error(Status::service_unavailable, "unavailable",
                         "the asset store is not running (netboot starting or stopped)");
}

// The asset's JSON for the API: the stored record plus whether this controller has the bytes.
json api_json(const AssetStore& store, const AssetInfo& a) {
  auto j = to_json(a);
  std::error_code ec;
  j["local"] = std::filesystem::is_regular_file(store.dir() / a.sha256, ec);
  return j;
}

std::string who_of(const Request& req) {
  return req.peer_identity.empty() ? "admin" : req.peer_identity;
}

template <class F>
asio::awaitable<Response> blocking(WorkerPool& pool, F job, std::chrono::milliseconds deadline) {
  auto r = co_await pool.run(std::move(job), deadline);
  if (!r) co_return error_response(r.error());
  co_return std::move(*r);
}

Expected<std::uint64_t> parse_offset(const Request& req) {
  const auto v = req.query_param("offset");
  if (!v) {
    return fail(Errc::invalid_argument,
                "offset: missing; PUT assets/{name}/upload?offset=N with N the upload's size");
  }
  std::uint64_t n = 0;
  const auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (v->empty() || ec != std::errc() || ptr != v->data() + v->size()) {
    return fail(Errc::invalid_argument,
                fmt::format("offset: '{}' is not a non-negative integer", *v));
  }
  return n;
}

struct CommitRequest {
  std::string sha256;
  std::uint64_t size = 0;
  std::string content_type;
};

Expected<CommitRequest> parse_commit(std::string_view body) {
  constexpr std::string_view what = "commit";
  auto j = json_fields::parse(body, what);
  if (!j) return std::unexpected(j.error());
  if (auto ok = json_fields::check_object(*j, what, {"sha256", "size", "content_type"}); !ok) {
    return std::unexpected(ok.error());
  }
  CommitRequest c;
  auto sha = json_fields::require_string(*j, what, "sha256");
  if (!sha) return std::unexpected(sha.error());
  c.sha256 = std::move(*sha);
  const auto size = j->find("size");
  if (size == j->end() || !size->is_number_unsigned()) {
    return fail(Errc::invalid_argument, "commit.size: must be a non-negative integer");
  }
  c.size = size->get<std::uint64_t>();
  auto ct = json_fields::get_string(*j, what, "content_type");
  if (!ct) return std::unexpected(ct.error());
  c.content_type = ct->value_or("");
  return c;
}

}  // namespace

void add_asset_routes(ModuleRoutes& routes, const AssetsFn& assets, const WorkersFn& workers) {
  (void)routes.add("assets", "boot assets (kernels, initrds, iPXE, ...) with their holders",
                   [assets, workers](Request&) -> asio::awaitable<Response> {
                     auto a = assets();
                     auto* pool = workers();
                     if (!a || pool == nullptr) co_return not_running();
                     auto job = [a]() -> Expected<Response> {
                       auto list = a->list();
                       if (!list) return std::unexpected(list.error());
                       json out = json::array();
                       for (const auto& info : *list)
                         out.push_back(api_json(*a, info));
                       return Response::json({{"assets", out}});
                     };
                     co_return co_await blocking(*pool, std::move(job), kDeadline);
                   });

  (void)routes.add("assets/{name}", "one boot asset's metadata",
                   [assets, workers](Request& req) -> asio::awaitable<Response> {
                     auto a = assets();
                     auto* pool = workers();
                     if (!a || pool == nullptr) co_return not_running();
                     std::string name(req.path_param("name").value_or(""));
                     auto job = [a, name]() -> Expected<Response> {
                       auto info = a->get(name);
                       if (!info) return std::unexpected(info.error());
                       return Response::json(api_json(*a, *info));
                     };
                     co_return co_await blocking(*pool, std::move(job), kDeadline);
                   });

  (void)routes.add(
      "assets/{name}",
      "POST {\"sha256\",\"size\",\"content_type\"}: commit the upload as the asset; DELETE: "
      "remove the asset",
      [assets, workers](Request& req) -> asio::awaitable<Response> {
        auto a = assets();
        auto* pool = workers();
        if (!a || pool == nullptr) co_return not_running();
        std::string name(req.path_param("name").value_or(""));
        const auto who = who_of(req);
        if (req.method == http::Verb::delete_) {
          auto job = [a, name, who]() -> Expected<Response> {
            if (auto ok = a->remove(name, who); !ok) return std::unexpected(ok.error());
            return Response::json({{"deleted", name}});
          };
          co_return co_await blocking(*pool, std::move(job), kDeadline);
        }
        if (req.method != http::Verb::post) {
          auto r = Response::error(Status::method_not_allowed, "method_not_allowed",
                                   "use POST to commit or DELETE to remove");
          r.headers.emplace_back("Allow", "POST, DELETE");
          co_return r;
        }
        auto commit = parse_commit(req.body);
        if (!commit) co_return error_response(commit.error());
        auto job = [a, name, who, c = std::move(*commit)]() -> Expected<Response> {
          auto info = a->commit_upload(name, c.sha256, c.size, c.content_type, who);
          if (!info) return std::unexpected(info.error());
          return Response::json(api_json(*a, *info));
        };
        co_return co_await blocking(*pool, std::move(job), kCommitDeadline);
      },
      true);

  (void)routes.add("assets/{name}/upload", "the size of an upload in progress (where to resume)",
                   [assets, workers](Request& req) -> asio::awaitable<Response> {
                     auto a = assets();
                     auto* pool = workers();
                     if (!a || pool == nullptr) co_return not_running();
                     std::string name(req.path_param("name").value_or(""));
                     auto job = [a, name]() -> Expected<Response> {
                       auto size = a->upload_offset(name);
                       if (!size) return std::unexpected(size.error());
                       return Response::json({{"name", name}, {"offset", *size}});
                     };
                     co_return co_await blocking(*pool, std::move(job), kDeadline);
                   });

  (void)routes.add(
      "assets/{name}/upload",
      "PUT ?offset=N with raw bytes: append a chunk at N (409 with the expected offset "
      "otherwise); DELETE: discard the upload",
      [assets, workers](Request& req) -> asio::awaitable<Response> {
        auto a = assets();
        auto* pool = workers();
        if (!a || pool == nullptr) co_return not_running();
        std::string name(req.path_param("name").value_or(""));
        if (req.method == http::Verb::delete_) {
          auto job = [a, name]() -> Expected<Response> {
            if (auto ok = a->discard_upload(name); !ok) return std::unexpected(ok.error());
            return Response::json({{"discarded", name}});
          };
          co_return co_await blocking(*pool, std::move(job), kDeadline);
        }
        if (req.method != http::Verb::put) {
          auto r = Response::error(Status::method_not_allowed, "method_not_allowed",
                                   "use PUT to append a chunk or DELETE to discard");
          r.headers.emplace_back("Allow", "PUT, DELETE");
          co_return r;
        }
        auto offset = parse_offset(req);
        if (!offset) co_return error_response(offset.error());
        auto job = [a, name, at = *offset, data = std::move(req.body)]() -> Expected<Response> {
          auto r = a->append_upload(name, at, data);
          if (!r) return std::unexpected(r.error());
          if (!r->accepted) {
            return Response::json(
                {{"error", "failed_precondition"},
                 {"message", fmt::format("upload of '{}': a chunk at offset {}, but the "
                                         "upload has {} bytes; continue at offset {}",
                                         name, at, r->offset, r->offset)},
                 {"offset", r->offset}},
                Status::conflict);
          }
          return Response::json({{"name", name}, {"offset", r->offset}});
        };
        co_return co_await blocking(*pool, std::move(job), kDeadline);
      },
      true);
}

}  // namespace neco::netboot
