// The inventory's admin routes: request parsing and validation on the event loop, the store
// calls (Inventory methods) on the worker pool, answers mapped from Errc. See the header for
// the route list and the status mapping.
#include "modules/netboot/inventory_routes.hpp"

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <fmt/format.h>

#include <boost/beast/http/verb.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "agent/http/request.hpp"
#include "agent/http/response.hpp"
#include "agent/log/log.hpp"
#include "agent/runtime/worker_pool.hpp"
#include "modules/netboot/inventory.hpp"

namespace neco::netboot {
namespace {

namespace asio = boost::asio;
using http::Request;
using http::Response;
using http::Status;
using http::Verb;
using json = nlohmann::json;
using Ctx = std::shared_ptr<const InventoryRoutesContext>;

using http::error_response;

Response bad_request(std::string message) {
  return error_response(Error{Errc::invalid_argument, std::move(message)});
}

// 405 from inside a handler: the router sends every mutating verb to the one mutating route.
Response method_not_allowed(const Request& req, std::string allow) {
  auto r = Response::error(
      Status::method_not_allowed, "method_not_allowed",
      fmt::format("{} is not allowed on \"{}\" (allowed: {})",
                  std::string_view(boost::beast::http::to_string(req.method)), req.path, allow));
  r.headers.emplace_back("Allow", std::move(allow));
  return r;
}

// The query as the library's *_from_params take it. "labels" may repeat (the values join with
// ','); any other repeated name is an error rather than a silent pick of one value.
Expected<std::map<std::string, std::string>> params_of(const Request& req) {
  std::map<std::string, std::string> out;
  for (const auto& [name, value] : req.query) {
    auto [it, inserted] = out.emplace(name, value);
    if (inserted) continue;
    if (name != "labels") {
      return fail(Errc::invalid_argument,
                  fmt::format("query parameter \"{}\" is given more than once", name));
    }
    it->second += "," + value;
  }
  return out;
}

// Routes that take no query parameters say so instead of ignoring them.
Expected<void> no_params(const Request& req) {
  if (req.query.empty()) return {};
  return fail(Errc::invalid_argument, fmt::format("unknown query parameter \"{}\": {} takes none",
                                                  req.query.front().first, req.path));
}

Expected<json> parse_body(const Request& req) {
  if (req.body.empty()) return fail(Errc::invalid_argument, "the request body is empty");
  try {
    return json::parse(req.body);
  } catch (const json::parse_error& e) {
    return fail(Errc::invalid_argument, fmt::format("the request body is not JSON: {}", e.what()));
  }
}

// The inventory and the pool to call it on, or unavailable saying why there are none.
struct Backend {
  std::shared_ptr<Inventory> inventory;
  WorkerPool* pool = nullptr;
};

Expected<Backend> backend(const InventoryRoutesContext& ctx) {
  Backend b;
  b.pool = ctx.workers ? ctx.workers() : nullptr;
  if (b.pool == nullptr) {
    return fail(Errc::unavailable, "the netboot module is not running on this agent");
  }
  b.inventory = ctx.inventory ? ctx.inventory() : nullptr;
  if (!b.inventory) {
    return fail(Errc::unavailable,
                "this agent has no machine inventory: it lives in the store, which only "
                "controllers (controller: true) have; ask a controller's agent");
  }
  return b;
}

// Runs job(Inventory&) -> Expected<Response> on the worker pool; errors become answers.
template <class F>
asio::awaitable<Response> blocking(Backend b, std::chrono::milliseconds deadline, F job) {
  auto call = [inventory = std::move(b.inventory), job = std::move(job)]() -> Expected<Response> {
    return job(*inventory);
  };
  auto r = co_await b.pool->run(std::move(call), deadline);
  if (!r) co_return error_response(r.error());
  co_return std::move(*r);
}

json machines_json(const std::vector<Machine>& machines) {
  json list = json::array();
  for (const auto& m : machines)
    list.push_back(to_json(m));
  return list;
}

std::string serial_of(const Request& req) {
  return std::string(req.path_param("serial").value_or(""));
}

// ---- Handlers (coroutines; parameters by value so they live in the frame)

asio::awaitable<Response> list_machines(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  auto params = params_of(req);
  if (!params) co_return error_response(params.error());
  auto filter = machine_filter_from_params(*params);
  if (!filter) co_return error_response(filter.error());
  auto job = [filter = std::move(*filter)](Inventory& inv) -> Expected<Response> {
    auto machines = inv.query(filter);
    if (!machines) return std::unexpected(machines.error());
    return Response::json({{"machines", machines_json(*machines)}});
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

// The specs of a POST body: one object or an array of them, every one valid, no serial twice.
Expected<std::vector<MachineSpec>> specs_from_body(const json& body) {
  const bool single = body.is_object();
  if (!single && !body.is_array()) {
    return fail(Errc::invalid_argument,
                "the request body must be a machine spec (JSON object) or an array of them");
  }
  if (body.is_array() && body.empty()) {
    return fail(Errc::invalid_argument, "the array of machine specs is empty");
  }
  std::vector<MachineSpec> specs;
  std::set<std::string> seen;
  const auto items = single ? json::array({body}) : body;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto at = single ? std::string() : fmt::format("machine [{}]: ", i);
    auto spec = machine_spec_from_json(items[i]);
    if (!spec) return fail(Errc::invalid_argument, at + spec.error().message);
    if (auto ok = validate(*spec); !ok)
      return fail(Errc::invalid_argument, at + ok.error().message);
    if (!seen.insert(spec->serial).second) {
      return fail(Errc::invalid_argument,
                  fmt::format("{}serial \"{}\" appears more than once", at, spec->serial));
    }
    specs.push_back(std::move(*spec));
  }
  return specs;
}

asio::awaitable<Response> register_machines(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  auto body = parse_body(req);
  if (!body) co_return error_response(body.error());
  auto specs = specs_from_body(*body);
  if (!specs) co_return error_response(specs.error());
  auto job = [specs = std::move(*specs), single = body->is_object(),
              who = requester(req)](Inventory& inv) -> Expected<Response> {
    if (single) {
      auto m = inv.register_machine(specs.front(), who);
      if (!m) return std::unexpected(m.error());
      return Response::json(to_json(*m), Status::created);
    }
    json results = json::array();
    std::optional<Error> first_error;
    std::size_t registered = 0;
    for (const auto& spec : specs) {
      auto m = inv.register_machine(spec, who);
      if (m) {
        ++registered;
        results.push_back({{"serial", spec.serial}, {"ok", true}, {"machine", to_json(*m)}});
      } else {
        results.push_back({{"serial", spec.serial},
                           {"ok", false},
                           {"error", to_string(m.error().code)},
                           {"message", m.error().message}});
        if (!first_error) first_error = m.error();
      }
    }
    if (!first_error) return Response::json({{"results", results}}, Status::created);
    json doc = {{"error", to_string(first_error->code)},
                {"message", fmt::format("{} of {} machines registered; {}", registered,
                                        specs.size(), first_error->message)},
                {"results", results}};
    return Response::json(doc, http::http_status(first_error->code));
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

asio::awaitable<Response> get_machine(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  auto job = [serial = serial_of(req)](Inventory& inv) -> Expected<Response> {
    auto m = inv.get(serial);
    if (!m) return std::unexpected(m.error());
    return Response::json(to_json(*m));
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

asio::awaitable<Response> update_machine(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  auto body = parse_body(req);
  if (!body) co_return error_response(body.error());
  auto update = machine_update_from_json(*body);
  if (!update) co_return error_response(update.error());
  auto job = [serial = serial_of(req), update = std::move(*update),
              who = requester(req)](Inventory& inv) -> Expected<Response> {
    auto m = inv.update(serial, update, who);
    if (!m) return std::unexpected(m.error());
    return Response::json(to_json(*m));
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

asio::awaitable<Response> remove_machine(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  auto job = [serial = serial_of(req), who = requester(req)](Inventory& inv) -> Expected<Response> {
    auto r = inv.remove(serial, who);
    if (!r) return std::unexpected(r.error());
    return Response::json({{"removed", serial}});
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

asio::awaitable<Response> set_state(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  auto body = parse_body(req);
  if (!body) co_return error_response(body.error());
  if (!body->is_object()) co_return bad_request("the request body must be {\"state\": \"NAME\"}");
  for (const auto& [key, value] : body->items()) {
    if (key != "state") co_return bad_request(fmt::format("unknown key \"{}\": only state", key));
  }
  const auto it = body->find("state");
  if (it == body->end() || !it->is_string()) {
    co_return bad_request("state: a string is required, e.g. {\"state\": \"healthy\"}");
  }
  const auto name = it->get<std::string>();
  const auto state = parse_machine_state(name);
  if (!state) {
    std::string known;
    for (const auto s : kAllStates)
      known += (known.empty() ? "" : ", ") + std::string(to_string(s));
    co_return bad_request(fmt::format("state: \"{}\" is not one of {}", name, known));
  }
  auto job = [serial = serial_of(req), state = *state,
              who = requester(req)](Inventory& inv) -> Expected<Response> {
    auto m = inv.set_state(serial, state, who);
    if (!m) return std::unexpected(m.error());
    return Response::json(to_json(*m));
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

asio::awaitable<Response> get_ipam(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  auto job = [](Inventory& inv) -> Expected<Response> {
    auto c = inv.get_ipam();
    if (!c) return std::unexpected(c.error());
    return Response::json(to_json(*c));
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

asio::awaitable<Response> put_ipam(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  auto body = parse_body(req);
  if (!body) co_return error_response(body.error());
  auto config = ipam_config_from_json(*body);
  if (!config) co_return error_response(config.error());
  auto job = [config = std::move(*config),
              who = requester(req)](Inventory& inv) -> Expected<Response> {
    auto c = inv.put_ipam(config, who);
    if (!c) return std::unexpected(c.error());
    return Response::json(to_json(*c));
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

asio::awaitable<Response> list_templates(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  auto job = [](Inventory& inv) -> Expected<Response> {
    auto list = inv.list_templates();
    if (!list) return std::unexpected(list.error());
    json out = json::array();
    for (const auto& t : *list)
      out.push_back(to_json(t));
    return Response::json(json{{"templates", std::move(out)}});
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

asio::awaitable<Response> get_template(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  auto job = [role = std::string(req.path_param("role").value_or(""))](
                 Inventory& inv) -> Expected<Response> {
    auto t = inv.get_template(role);
    if (!t) return std::unexpected(t.error());
    return Response::json(to_json(*t));
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

// PUT stores the body as the role's template (the path names the role; a "role" in the body
// must agree); DELETE removes it.
asio::awaitable<Response> change_template(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  if (auto ok = no_params(req); !ok) co_return error_response(ok.error());
  const std::string role(req.path_param("role").value_or(""));
  if (req.method == Verb::delete_) {
    auto job = [role, who = requester(req)](Inventory& inv) -> Expected<Response> {
      if (auto ok = inv.remove_template(role, who); !ok) return std::unexpected(ok.error());
      return Response::json(json{{"removed", role}});
    };
    co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
  }
  auto body = parse_body(req);
  if (!body) co_return error_response(body.error());
  auto tpl = boot_template_from_json(*body);
  if (!tpl) co_return error_response(tpl.error());
  if (!tpl->role.empty() && tpl->role != role) {
    co_return bad_request(fmt::format(
        "the body is the template of role \"{}\", the path names \"{}\"", tpl->role, role));
  }
  tpl->role = role;
  auto job = [tpl = std::move(*tpl), who = requester(req)](Inventory& inv) -> Expected<Response> {
    auto t = inv.put_template(tpl, who);
    if (!t) return std::unexpected(t.error());
    return Response::json(to_json(*t));
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

asio::awaitable<Response> get_audit(Ctx ctx, Request& req) {
  auto b = backend(*ctx);
  if (!b) co_return error_response(b.error());
  auto params = params_of(req);
  if (!params) co_return error_response(params.error());
  auto query = audit_query_from_params(*params);
  if (!query) co_return error_response(query.error());
  auto job = [query = std::move(*query)](Inventory& inv) -> Expected<Response> {
    auto entries = inv.audit(query);
    if (!entries) return std::unexpected(entries.error());
    json list = json::array();
    for (const auto& e : *entries)
      list.push_back(to_json(e));
    return Response::json({{"entries", list}});
  };
  co_return co_await blocking(std::move(*b), ctx->deadline, std::move(job));
}

}  // namespace

std::string requester(const http::Request& request) {
  if (!request.peer_identity.empty()) return request.peer_identity;
  if (request.peer.empty() || request.peer == "unix") return "admin";
  return "admin@" + request.peer;
}

std::shared_ptr<Inventory> make_inventory(store::Store& store) {
  return std::make_shared<Inventory>(store);
}

void add_inventory_routes(ModuleRoutes& routes, InventoryRoutesContext context) {
  const auto ctx = std::make_shared<const InventoryRoutesContext>(std::move(context));
  static const log::Logger logger("netboot");
  auto add = [&](std::string_view path, std::string help, http::Handler handler, bool mutates) {
    if (auto ok = routes.add(path, std::move(help), std::move(handler), mutates); !ok) {
      logger.error("Failed to add route \"{}\": {}", path, ok.error().message);
    }
  };
  add(
      "machines",
      "machines in the inventory; filters: serial, rack, role, state, labels=k=v,..., address",
      [ctx](Request& req) -> asio::awaitable<Response> {
        co_return co_await list_machines(ctx, req);
      },
      false);
  add(
      "machines", "POST registers a machine spec or an array of them (JSON)",
      [ctx](Request& req) -> asio::awaitable<Response> {
        if (req.method != Verb::post) co_return method_not_allowed(req, "GET, HEAD, POST");
        co_return co_await register_machines(ctx, req);
      },
      true);
  add(
      "machines/{serial}", "one machine",
      [ctx](Request& req) -> asio::awaitable<Response> {
        co_return co_await get_machine(ctx, req);
      },
      false);
  add(
      "machines/{serial}",
      "PUT updates labels (null removes) and retire_date; DELETE removes a retired machine",
      [ctx](Request& req) -> asio::awaitable<Response> {
        if (req.method == Verb::put) co_return co_await update_machine(ctx, req);
        if (req.method == Verb::delete_) co_return co_await remove_machine(ctx, req);
        co_return method_not_allowed(req, "GET, HEAD, PUT, DELETE");
      },
      true);
  add(
      "machines/{serial}/state", "PUT {\"state\": NAME} moves a machine along its lifecycle",
      [ctx](Request& req) -> asio::awaitable<Response> {
        if (req.method != Verb::put) co_return method_not_allowed(req, "PUT");
        co_return co_await set_state(ctx, req);
      },
      true);
  add(
      "ipam", "the IPAM config machines get their addresses from",
      [ctx](Request& req) -> asio::awaitable<Response> { co_return co_await get_ipam(ctx, req); },
      false);
  add(
      "ipam", "PUT stores the IPAM config (refused while machines exist)",
      [ctx](Request& req) -> asio::awaitable<Response> {
        if (req.method != Verb::put) co_return method_not_allowed(req, "GET, HEAD, PUT");
        co_return co_await put_ipam(ctx, req);
      },
      true);
  add(
      "templates", "boot templates by role (kernel, initrds, command line, boot config)",
      [ctx](Request& req) -> asio::awaitable<Response> {
        co_return co_await list_templates(ctx, req);
      },
      false);
  add(
      "templates/{role}", "one role's boot template",
      [ctx](Request& req) -> asio::awaitable<Response> {
        co_return co_await get_template(ctx, req);
      },
      false);
  add(
      "templates/{role}",
      "PUT stores a role's boot template (checked by rendering it); DELETE removes it",
      [ctx](Request& req) -> asio::awaitable<Response> {
        if (req.method != Verb::put && req.method != Verb::delete_) {
          co_return method_not_allowed(req, "GET, HEAD, PUT, DELETE");
        }
        co_return co_await change_template(ctx, req);
      },
      true);
  add(
      "audit", "inventory mutations; filters: since, until, serial, action, limit, order",
      [ctx](Request& req) -> asio::awaitable<Response> { co_return co_await get_audit(ctx, req); },
      false);
}

}  // namespace neco::netboot
