#include "agent/store/etcd_store.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

#include "agent/log/log.hpp"
#include "agent/store/etcd_codec.hpp"

namespace neco::store {

using etcd::Json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

const log::Logger& logger() {
  static const log::Logger l("store");
  return l;
}

void curl_init_once() {
  // curl_global_init is not thread-safe before 7.84; a function static runs it exactly once.
  static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  (void)rc;
}

long to_long(milliseconds d) {
  return static_cast<long>(std::max<milliseconds::rep>(d.count(), 1));
}

size_t append_to_string(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// Failures that happen before any byte of the request left: another endpoint may take it.
bool connect_failure(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
      return true;
    default:
      return false;
  }
}

// etcd's own words in an error made by etcd::decode_error, without the "Failed to <op>: ".
std::string etcd_words(const Error& e, std::string_view op) {
  const auto prefix = fmt::format("Failed to {}: ", op);
  return e.message.starts_with(prefix) ? e.message.substr(prefix.size()) : e.message;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

// Why `endpoint` cannot be used as a client URL, nullopt when it can.
std::optional<std::string> endpoint_problem(const std::string& endpoint) {
  if (!endpoint.starts_with("http://") && !endpoint.starts_with("https://")) {
    return "is not an http:// or https:// URL";
  }
  std::unique_ptr<CURLU, void (*)(CURLU*)> url(curl_url(), curl_url_cleanup);
  if (!url) return "cannot be parsed (out of memory)";
  if (auto rc = curl_url_set(url.get(), CURLUPART_URL, endpoint.c_str(), 0); rc != CURLUE_OK) {
    return fmt::format("is not a valid URL ({})", curl_url_strerror(rc));
  }
  auto part = [&](CURLUPart which) -> std::string {
    char* text = nullptr;
    if (curl_url_get(url.get(), which, &text, 0) != CURLUE_OK || text == nullptr) return {};
    std::string out(text);
    curl_free(text);
    return out;
  };
  if (part(CURLUPART_HOST).empty()) return "has no host";
  if (auto path = part(CURLUPART_PATH); !path.empty() && path != "/") {
    return "has a path (the gateway lives at the root: give scheme://host:port)";
  }
  if (!part(CURLUPART_QUERY).empty() || !part(CURLUPART_FRAGMENT).empty()) {
    return "has a query or fragment";
  }
  return std::nullopt;
}

// Unary requests that only read may be retried elsewhere when an answer is missing; a write
// may have been applied by a member that then failed to answer.
enum class Kind { read, write };

bool read_only(const Txn& txn) {
  auto ops_read_only = [](const std::vector<Op>& ops) {
    return std::all_of(ops.begin(), ops.end(), [](const Op& op) {
      return op.type == Op::Type::range ||
             (op.type == Op::Type::txn && op.txn && read_only(*op.txn));
    });
  };
  return ops_read_only(txn.success) && ops_read_only(txn.failure);
}

// One try of one request against one endpoint.
struct Attempt {
  CURLcode rc = CURLE_OK;
  long status = 0;
  std::string body;
  bool sent = false;  // some of the request left: the server may have acted on it
  std::string error;  // what went wrong in transport, when rc != CURLE_OK
};

constexpr milliseconds kMinBackoff{50};
constexpr milliseconds kMaxBackoff{2000};
constexpr size_t kMaxPooledHandles = 8;

}  // namespace

struct EtcdStore::Core {
  EtcdOptions options;
  std::vector<std::string> endpoints;  // validated, without a trailing '/'
  std::atomic<size_t> preferred{0};    // index of the endpoint that answered last
  curl_slist* headers = nullptr;
  std::atomic<std::shared_ptr<const StatsHook>> stats;

  std::mutex pool_mu;
  std::vector<CURL*> pool;  // idle handles, each keeping its connections open for reuse

  Core(EtcdOptions o, std::vector<std::string> eps)
      : options(std::move(o)), endpoints(std::move(eps)) {
    headers = curl_slist_append(nullptr, "Content-Type: application/json");
    // curl would otherwise wait for "100 Continue" before sending bodies over 1 KiB.
    headers = curl_slist_append(headers, "Expect:");
  }
  ~Core() {
    for (CURL* h : pool)
      curl_easy_cleanup(h);
    curl_slist_free_all(headers);
  }
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // Options every handle carries, unary or watch.
  void configure(CURL* h) const {
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM around name lookups
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");  // the store must not depend on an HTTP proxy
    // One request at a time per handle: HTTP/2 would bring nothing but another code path.
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, to_long(options.dial_timeout));
    // Probes a silent peer after 5 s, every 2 s: finds a vanished host or a cut network
    // within ~25 s (Linux's 9 probes). A stopped process is not found this way (its kernel
    // answers), which is what watch_idle_timeout is for.
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 2L);
    if (!options.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options.ca_file.c_str());
    if (!options.cert_file.empty()) {
      curl_easy_setopt(h, CURLOPT_SSLCERT, options.cert_file.c_str());
    }
    if (!options.key_file.empty()) curl_easy_setopt(h, CURLOPT_SSLKEY, options.key_file.c_str());
  }

  CURL* acquire() {
    {
      std::lock_guard lock(pool_mu);
      if (!pool.empty()) {
        CURL* h = pool.back();
        pool.pop_back();
        return h;
      }
    }
    CURL* h = curl_easy_init();
    if (h) configure(h);
    return h;
  }

  void release(CURL* h) {
    {
      std::lock_guard lock(pool_mu);
      if (pool.size() < kMaxPooledHandles) {
        pool.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }

  // Moves the preferred endpoint past `failed`, unless another request already did.
  void skip(size_t failed) {
    preferred.compare_exchange_strong(failed, (failed + 1) % endpoints.size());
  }

  Attempt perform(size_t endpoint, std::string_view path, const std::string& body,
                  milliseconds timeout) {
    Attempt a;
    CURL* h = acquire();
    if (!h) {
      a.rc = CURLE_OUT_OF_MEMORY;
      a.error = "cannot create a curl handle";
      return a;
    }
    const std::string url = endpoints[endpoint] + std::string(path);
    char error[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, append_to_string);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &a.body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, to_long(timeout));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     to_long(std::min(options.dial_timeout, timeout)));
    a.rc = curl_easy_perform(h);
    if (a.rc == CURLE_OK) {
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a.status);
      a.sent = true;
    } else {
      long request_bytes = 0;
      curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &request_bytes);
      a.sent = request_bytes > 0 && !connect_failure(a.rc);
      a.error = error[0] != '\0' ? error : curl_easy_strerror(a.rc);
    }
    // The handle outlives this frame in the pool: drop the pointers into it.
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, nullptr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, nullptr);
    release(h);
    return a;
  }

  // Sends one unary request, failing over between endpoints as its Kind allows, and returns
  // the parsed answer (the first object of a streamed one).
  Expected<Json> call(std::string_view op, std::string_view path, const Json& request, Kind kind) {
    const auto deadline = Clock::now() + options.request_timeout;
    const std::string body = request.dump();
    const size_t n = endpoints.size();
    const size_t first = preferred.load();
    std::vector<std::string> failures;
    for (size_t i = 0; i < n; ++i) {
      const size_t ep = (first + i) % n;
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left <= milliseconds::zero()) break;
      // A read that hangs here may still be answered elsewhere, so it gets a share of the time.
      const auto budget = kind == Kind::read ? left / static_cast<long>(n - i) : left;
      Attempt a = perform(ep, path, body, budget);
      if (a.rc == CURLE_OK) {
        std::optional<Error> refused;
        if (a.status == 200) {
          try {
            // Streaming endpoints (lease keepalive) answer {"result":...} objects, one a line,
            // or a {"error":...} object with status 200 already sent.
            auto objects = etcd::JsonObjectSplitter().feed(a.body);
            if (objects.empty()) throw std::runtime_error("empty answer");
            Json answer = Json::parse(objects.front());
            if (!answer.contains("error")) {
              preferred.store(ep);
              return answer;
            }
            refused = etcd::decode_error(op, 200, objects.front());
          } catch (const std::exception& e) {
            return fail(Errc::internal, fmt::format("Failed to {}: malformed answer from {}: {}",
                                                    op, endpoints[ep], e.what()));
          }
        } else {
          refused = etcd::decode_error(op, a.status, a.body);
        }
        // "no leader" and the like: the member did not act on it, another one may do better.
        if (kind == Kind::read && refused->code == Errc::unavailable) {
          failures.push_back(fmt::format("{}: {}", endpoints[ep], etcd_words(*refused, op)));
          skip(ep);
          continue;
        }
        preferred.store(ep);
        return std::unexpected(std::move(*refused));
      }
      failures.push_back(fmt::format("{}: {}", endpoints[ep], a.error));
      skip(ep);
      if (a.sent && kind == Kind::write) {
        return fail(a.rc == CURLE_OPERATION_TIMEDOUT ? Errc::deadline_exceeded : Errc::unavailable,
                    fmt::format("Failed to {}: no answer from {} ({}); the outcome is unknown", op,
                                endpoints[ep], a.error));
      }
    }
    const bool late = Clock::now() >= deadline;
    return fail(
        late ? Errc::deadline_exceeded : Errc::unavailable,
        fmt::format("Failed to {}: no etcd endpoint answered{}: {}", op,
                    late ? fmt::format(" within {}ms", options.request_timeout.count()) : "",
                    failures.empty() ? "no time left" : join(failures, "; ")));
  }

  // Empty when the member behind `endpoint` answers its status and follows a leader; else why
  // not. Used on a silent watch stream, whose TCP connection alone proves nothing.
  std::string check_alive(size_t endpoint) {
    Attempt a = perform(endpoint, "/v3/maintenance/status", "{}", options.dial_timeout);
    if (a.rc != CURLE_OK) return fmt::format("its status request failed ({})", a.error);
    if (a.status != 200) return etcd::decode_error("get status", a.status, a.body).message;
    try {
      Json status = Json::parse(a.body);
      // Member ids are uint64: compared as text, never parsed into an int64.
      auto leader = status.find("leader");
      if (leader == status.end() || *leader == "0" || *leader == 0)
        return "the member has no leader";
    } catch (const Json::exception& e) {
      return fmt::format("its status is malformed ({})", e.what());
    }
    return {};
  }

  // Encodes, calls and decodes; encoder and decoder exceptions become errors.
  template <class Encode, class Decode>
  auto exchange(std::string_view op, std::string_view path, Kind kind, Encode&& encode,
                Decode&& decode) -> Expected<std::invoke_result_t<Decode, const Json&>> {
    Json request;
    try {
      request = encode();
    } catch (const std::invalid_argument& e) {
      return fail(Errc::invalid_argument, fmt::format("Failed to {}: {}", op, e.what()));
    }
    auto answer = call(op, path, request, kind);
    if (!answer) return std::unexpected(std::move(answer.error()));
    try {
      return decode(*answer);
    } catch (const std::exception& e) {
      return fail(Errc::internal,
                  fmt::format("Failed to {}: malformed answer from etcd: {}", op, e.what()));
    }
  }

  template <class R>
  R timed(std::string_view op, Clock::time_point start, R result) {
    if (auto hook = stats.load(); hook && *hook) {
      (*hook)(op, std::chrono::duration<double>(Clock::now() - start).count(), result.has_value());
    }
    return result;
  }
};

// ---- watch ---------------------------------------------------------------------------------
//
// Each watch owns one thread, one curl multi handle and one streaming POST /v3/watch. A shared
// multi loop would save threads, but then one slow callback would stall every other watch;
// the agent runs a handful of watches, so isolation wins. Cancelling wakes the thread's
// curl_multi_poll with curl_multi_wakeup, which is immediate, where a flag checked from
// CURLOPT_XFERINFOFUNCTION is only looked at about once a second on an idle stream.

namespace {

struct WatchState {
  WatchState(std::shared_ptr<EtcdStore::Core> c, WatchRequest r, WatchCallback cb)
      : core(std::move(c)), request(std::move(r)), callback(std::move(cb)) {
    next_revision = request.start_revision;
  }
  ~WatchState() {
    if (multi) curl_multi_cleanup(multi);
  }
  WatchState(const WatchState&) = delete;
  WatchState& operator=(const WatchState&) = delete;

  // Reports to watch() the first "created", or why there was none; later calls do nothing.
  void settle(std::optional<Error> error) {
    {
      std::lock_guard lock(mu);
      if (settled) return;
      settled = true;
      failure = std::move(error);
    }
    cv.notify_all();
  }

  void deliver(const WatchResponse& response) {
    std::lock_guard lock(callback_mu);
    if (cancelled.load()) return;
    try {
      callback(response);
    } catch (const std::exception& e) {
      logger().error("Watch callback on '{}' threw: {}", request.range.key, e.what());
    } catch (...) {
      logger().error("Watch callback on '{}' threw a non-standard exception", request.range.key);
    }
  }

  const std::shared_ptr<EtcdStore::Core> core;
  const WatchRequest request;  // start_revision already resolved (> 0)
  WatchCallback callback;
  CURLM* const multi = curl_multi_init();  // lives as long as this: cancel() wakes it
  std::atomic<bool> cancelled{false};
  std::atomic<std::thread::id> thread_id{};
  std::mutex callback_mu;  // held while the callback runs, so cancel() can wait it out

  std::mutex mu;
  std::condition_variable cv;
  bool settled = false;
  std::optional<Error> failure;

  // Watch thread only. Every event before next_revision was delivered (or is not owed): a new
  // stream starts there, which makes reconnects gap-free and duplicate-free.
  int64_t next_revision = 0;
  int64_t last_header_revision = 0;
};

// How one stream ended.
struct StreamEnd {
  bool created = false;          // etcd confirmed the watch on this stream
  bool finished = false;         // the watch is over (cancelled or final error delivered)
  std::optional<Error> refusal;  // etcd rejected the request itself: no endpoint will differ
  std::string reason;            // why the stream broke, when it should be resumed
};

struct StreamSink {
  etcd::JsonObjectSplitter splitter;
  std::vector<std::string> objects;
  Clock::time_point last_byte;
};

size_t on_stream_bytes(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<StreamSink*>(user);
  sink->last_byte = Clock::now();
  for (auto& o : sink->splitter.feed(std::string_view(data, size * count)))
    sink->objects.push_back(std::move(o));
  return size * count;
}

void handle_message(WatchState& s, const std::string& text, StreamEnd& end) {
  try {
    Json j = Json::parse(text);
    if (j.contains("error")) {
      Error e = etcd::decode_error("watch", 0, text);
      if (e.code == Errc::invalid_argument) {
        end.refusal = std::move(e);
      } else {
        end.reason = etcd_words(e, "watch");
      }
      return;
    }
    const Json& r = j.at("result");
    const int64_t header = etcd::header_revision(r);
    if (header > 0) s.last_header_revision = header;
    const std::string cancel_reason = r.value("cancel_reason", "");
    if (r.value("created", false)) {
      if (r.value("canceled", false)) {
        end.refusal = Error{Errc::invalid_argument, "Failed to watch: " + cancel_reason};
        return;
      }
      end.created = true;
      s.settle(std::nullopt);
      return;
    }
    if (const int64_t compact = etcd::int_field(r, "compact_revision"); compact > 0) {
      s.settle(std::nullopt);
      WatchResponse out;
      out.revision = s.last_header_revision;
      out.compact_revision = compact;
      out.error = Error{Errc::compacted,
                        fmt::format("required revision {} has been compacted; compact revision {}",
                                    s.next_revision, compact)};
      s.deliver(out);
      end.finished = true;
      return;
    }
    if (r.value("canceled", false)) {
      end.reason = "etcd cancelled the watch: " + cancel_reason;
      return;
    }
    auto groups = etcd::decode_watch_events(r, s.request.prev_kv);
    if (groups.empty()) {
      // A progress notification: etcd sends them only to watchers that are caught up, so
      // every event up to the header revision has been sent.
      if (end.created && header >= s.next_revision) s.next_revision = header + 1;
      return;
    }
    for (auto& g : groups) {
      if (g.revision < s.next_revision) continue;  // already delivered before a reconnect
      s.next_revision = g.revision + 1;
      s.deliver(g);
      if (s.cancelled.load()) return;
    }
  } catch (const std::exception& e) {
    end.reason = fmt::format("malformed watch message ({})", e.what());
  }
}

// Runs one stream from s.next_revision until it breaks, the watch ends, or (before etcd
// confirms it) `create_by` passes.
StreamEnd run_stream(WatchState& s, CURL* easy, size_t endpoint, Clock::time_point create_by) {
  auto& core = *s.core;
  const auto idle_limit = core.options.watch_idle_timeout;
  StreamEnd end;
  StreamSink sink;
  const std::string url = core.endpoints[endpoint] + "/v3/watch";
  const std::string body = etcd::encode_watch_create(s.request, s.next_revision).dump();
  char error[CURL_ERROR_SIZE] = "";
  curl_easy_reset(easy);
  core.configure(easy);
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_stream_bytes);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error);
  sink.last_byte = Clock::now();
  curl_multi_add_handle(s.multi, easy);
  for (;;) {
    int running = 0;
    curl_multi_perform(s.multi, &running);
    for (const auto& text : std::exchange(sink.objects, {})) {
      handle_message(s, text, end);
      if (s.cancelled.load() || end.finished || end.refusal || !end.reason.empty()) break;
    }
    if (s.cancelled.load()) end.finished = true;
    if (end.finished || end.refusal || !end.reason.empty()) break;
    int queued = 0;
    if (CURLMsg* m = curl_multi_info_read(s.multi, &queued); m && m->msg == CURLMSG_DONE) {
      long status = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
      if (m->data.result != CURLE_OK) {
        end.reason = error[0] != '\0' ? error : curl_easy_strerror(m->data.result);
      } else {
        end.reason = fmt::format("the stream ended (HTTP status {})", status);
      }
      break;
    }
    const auto now = Clock::now();
    if (!end.created && now >= create_by) {
      end.reason = "no answer to the watch request in time";
      break;
    }
    if (end.created && now - sink.last_byte >= idle_limit) {
      auto why = core.check_alive(endpoint);
      if (!why.empty()) {
        end.reason = fmt::format("no data for {}ms and {}", idle_limit.count(), why);
        break;
      }
      sink.last_byte = Clock::now();
    }
    const auto wake = end.created ? sink.last_byte + idle_limit : create_by;
    const auto wait = std::clamp(std::chrono::duration_cast<milliseconds>(wake - Clock::now()),
                                 milliseconds(1), milliseconds(1000));
    curl_multi_poll(s.multi, nullptr, 0, static_cast<int>(wait.count()), nullptr);
  }
  curl_multi_remove_handle(s.multi, easy);
  return end;
}

void run_watch(const std::shared_ptr<WatchState>& state) {
  WatchState& s = *state;
  s.thread_id.store(std::this_thread::get_id());
  auto& core = *s.core;
  const size_t n = core.endpoints.size();
  std::unique_ptr<CURL, void (*)(CURL*)> easy(curl_easy_init(), curl_easy_cleanup);
  if (!easy || !s.multi) {
    s.settle(Error{Errc::internal, "Failed to watch: cannot create curl handles"});
    return;
  }
  size_t endpoint = core.preferred.load();
  // Creating: each endpoint gets one try and a share of request_timeout; then watch() fails.
  const auto create_deadline = Clock::now() + core.options.request_timeout;
  std::vector<std::string> create_failures;
  bool established = false;
  auto backoff = kMinBackoff;
  while (!s.cancelled.load()) {
    // A member that accepts the connection but never confirms the watch (stopped, hung) must
    // not hold the watch: confirmation gets request_timeout, shared out while creating.
    auto create_by = Clock::now() + core.options.request_timeout;
    if (!established) {
      create_by = Clock::now() +
                  (create_deadline - Clock::now()) / static_cast<long>(n - create_failures.size());
    }
    StreamEnd end = run_stream(s, easy.get(), endpoint, create_by);
    established = established || end.created;
    if (end.finished || s.cancelled.load()) break;
    if (!established) {
      const Error* refusal = end.refusal ? &*end.refusal : nullptr;
      create_failures.push_back(
          fmt::format("{}: {}", core.endpoints[endpoint], refusal ? refusal->message : end.reason));
      if (refusal) {
        s.settle(*refusal);
        break;
      }
      if (create_failures.size() == n || Clock::now() >= create_deadline) {
        const bool late = Clock::now() >= create_deadline;
        s.settle(Error{late ? Errc::deadline_exceeded : Errc::unavailable,
                       fmt::format("Failed to watch: no etcd endpoint accepted the watch: {}",
                                   join(create_failures, "; "))});
        break;
      }
      endpoint = (endpoint + 1) % n;
      continue;
    }
    if (end.refusal) {
      // The same request was accepted before; a refusal now has no remedy but the caller's.
      WatchResponse out;
      out.revision = s.last_header_revision;
      out.error = end.refusal;
      s.deliver(out);
      break;
    }
    if (end.created) {
      // A working stream broke: worth a warning. Failed retries while the cluster is away are
      // only debug, or a long outage would flood the log.
      backoff = kMinBackoff;
      logger().warning("Watch on '{}' lost its stream from {}: {}; resuming at revision {}",
                       s.request.range.key, core.endpoints[endpoint], end.reason, s.next_revision);
    } else {
      logger().debug("Watch on '{}' could not resume on {}: {}", s.request.range.key,
                     core.endpoints[endpoint], end.reason);
    }
    endpoint = (endpoint + 1) % n;
    // Interruptible sleep: cancel() wakes the poll.
    curl_multi_poll(s.multi, nullptr, 0, static_cast<int>(backoff.count()), nullptr);
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
  s.settle(Error{Errc::cancelled, "Failed to watch: cancelled before etcd confirmed it"});
}

class EtcdWatch final : public Watch {
 public:
  EtcdWatch(std::shared_ptr<WatchState> state, std::thread thread)
      : s_(std::move(state)), thread_(std::move(thread)) {}
  ~EtcdWatch() override {
    cancel();
    if (!thread_.joinable()) return;
    // A callback may destroy its own watch: its thread cannot join itself, and it ends on its
    // own once it sees the flag (it holds what it needs).
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }
  EtcdWatch(const EtcdWatch&) = delete;
  EtcdWatch& operator=(const EtcdWatch&) = delete;

  void cancel() override {
    s_->cancelled.store(true);
    curl_multi_wakeup(s_->multi);
    // From inside a callback the thread holds callback_mu and checks the flag before the next
    // call; elsewhere taking the mutex waits out a running callback.
    if (std::this_thread::get_id() == s_->thread_id.load()) return;
    std::lock_guard lock(s_->callback_mu);
  }

 private:
  std::shared_ptr<WatchState> s_;
  std::thread thread_;
};

}  // namespace

// ---- the Store -----------------------------------------------------------------------------

EtcdStore::EtcdStore(std::shared_ptr<Core> core) : core_(std::move(core)) {}

EtcdStore::~EtcdStore() = default;

Expected<std::unique_ptr<EtcdStore>> EtcdStore::open(EtcdOptions options) {
  auto refuse = [](std::string why) {
    return fail(Errc::invalid_argument, "Failed to open etcd store: " + std::move(why));
  };
  if (options.endpoints.empty()) return refuse("no endpoints configured");
  curl_init_once();
  std::vector<std::string> endpoints;
  for (const auto& ep : options.endpoints) {
    if (auto problem = endpoint_problem(ep)) {
      return refuse(fmt::format("endpoint '{}' {}", ep, *problem));
    }
    std::string normalized = ep;
    while (normalized.ends_with('/'))
      normalized.pop_back();
    endpoints.push_back(std::move(normalized));
  }
  for (auto [name, value] : {std::pair{"request_timeout", options.request_timeout},
                             std::pair{"dial_timeout", options.dial_timeout},
                             std::pair{"watch_idle_timeout", options.watch_idle_timeout}}) {
    if (value <= milliseconds::zero()) return refuse(fmt::format("{} must be positive", name));
  }
  for (auto [name, path] :
       {std::pair{"ca_file", &options.ca_file}, std::pair{"cert_file", &options.cert_file},
        std::pair{"key_file", &options.key_file}}) {
    std::error_code ec;
    if (!path->empty() && !std::filesystem::is_regular_file(*path, ec)) {
      return refuse(fmt::format("{} '{}' is not a readable file", name, *path));
    }
  }
  if (!options.key_file.empty() && options.cert_file.empty()) {
    return refuse("key_file is set without cert_file");
  }
  auto core = std::make_shared<Core>(std::move(options), std::move(endpoints));
  auto status = core->call("open etcd store", "/v3/maintenance/status", Json::object(), Kind::read);
  if (!status) return std::unexpected(std::move(status.error()));
  return std::unique_ptr<EtcdStore>(new EtcdStore(std::move(core)));
}

Expected<RangeResponse> EtcdStore::range(const RangeRequest& request) {
  const auto start = Clock::now();
  return core_->timed("range", start,
                      core_->exchange(
                          "range", "/v3/kv/range", Kind::read,
                          [&] { return etcd::encode_range(request); }, etcd::decode_range));
}

Expected<PutResponse> EtcdStore::put(const PutRequest& request) {
  const auto start = Clock::now();
  return core_->timed("put", start,
                      core_->exchange(
                          "put", "/v3/kv/put", Kind::write,
                          [&] { return etcd::encode_put(request); }, etcd::decode_put));
}

Expected<DeleteResponse> EtcdStore::delete_range(const DeleteRequest& request) {
  const auto start = Clock::now();
  return core_->timed("delete_range", start,
                      core_->exchange(
                          "delete_range", "/v3/kv/deleterange", Kind::write,
                          [&] { return etcd::encode_delete(request); }, etcd::decode_delete));
}

Expected<TxnResponse> EtcdStore::txn(const Txn& txn) {
  const auto start = Clock::now();
  return core_->timed(
      "txn", start,
      core_->exchange(
          "txn", "/v3/kv/txn", read_only(txn) ? Kind::read : Kind::write,
          [&] { return etcd::encode_txn(txn); },
          [](const Json& j) { return etcd::decode_txn(j, etcd::header_revision(j)); }));
}

Expected<std::unique_ptr<Watch>> EtcdStore::watch(const WatchRequest& request,
                                                  WatchCallback callback) {
  const auto start = Clock::now();
  auto result = [&]() -> Expected<std::unique_ptr<Watch>> {
    if (request.range.key.empty() && request.range.range_end.empty()) {
      return fail(Errc::invalid_argument, "Failed to watch: empty key");
    }
    WatchRequest resolved = request;
    if (resolved.start_revision <= 0) {
      // "From the next write" pinned to a revision now, so a stream that breaks before any
      // event still resumes at the right place. A linearizable read: nothing written before
      // watch() was called is at or after the pinned revision.
      auto now = core_->exchange(
          "watch", "/v3/kv/range", Kind::read,
          [&] {
            Json j = etcd::encode_range(RangeRequest{KeyRange::exact(request.range.key), 1});
            j["count_only"] = true;
            return j;
          },
          [](const Json& j) { return etcd::header_revision(j); });
      if (!now) return std::unexpected(std::move(now.error()));
      resolved.start_revision = *now + 1;
    }
    auto state = std::make_shared<WatchState>(core_, std::move(resolved), std::move(callback));
    std::thread thread([state] { run_watch(state); });
    {
      std::unique_lock lock(state->mu);
      state->cv.wait(lock, [&] { return state->settled; });
    }
    if (state->failure) {
      state->cancelled.store(true);
      curl_multi_wakeup(state->multi);
      thread.join();
      return std::unexpected(*state->failure);
    }
    return std::make_unique<EtcdWatch>(std::move(state), std::move(thread));
  }();
  return core_->timed("watch", start, std::move(result));
}

Expected<void> EtcdStore::compact(int64_t revision) {
  const auto start = Clock::now();
  auto r = core_->exchange(
      "compact", "/v3/kv/compaction", Kind::write,
      [&] {
        Json j = Json::object();
        j["revision"] = std::to_string(revision);
        return j;
      },
      [](const Json&) { return 0; });
  Expected<void> result;
  if (!r) result = std::unexpected(std::move(r.error()));
  return core_->timed("compact", start, std::move(result));
}

Expected<LeaseGrant> EtcdStore::grant(int64_t ttl_seconds, int64_t id) {
  const auto start = Clock::now();
  // etcd would raise a TTL of 0 to its minimum and accept it; the store contract refuses it.
  if (ttl_seconds <= 0) {
    return core_->timed("lease_grant", start,
                        Expected<LeaseGrant>(fail(Errc::invalid_argument,
                                                  "Failed to grant lease: TTL must be positive")));
  }
  if (id < 0) {
    return core_->timed(
        "lease_grant", start,
        Expected<LeaseGrant>(
            fail(Errc::invalid_argument, "Failed to grant lease: id must not be negative")));
  }
  return core_->timed("lease_grant", start,
                      core_->exchange(
                          "grant lease", "/v3/lease/grant", Kind::write,
                          [&] {
                            Json j = Json::object();
                            j["TTL"] = std::to_string(ttl_seconds);
                            if (id != 0) j["ID"] = std::to_string(id);
                            return j;
                          },
                          [](const Json& j) {
                            if (auto e = j.value("error", ""); !e.empty())
                              throw std::runtime_error(e);
                            return LeaseGrant{etcd::int_field(j, "ID"), etcd::int_field(j, "TTL")};
                          }));
}

Expected<int64_t> EtcdStore::keep_alive(int64_t id) {
  const auto start = Clock::now();
  // A renewal repeated by a retry only renews again, so it may fail over like a read.
  auto r = core_->exchange(
      "keep lease alive", "/v3/lease/keepalive", Kind::read,
      [&] {
        Json j = Json::object();
        j["ID"] = std::to_string(id);
        return j;
      },
      [](const Json& j) { return etcd::int_field(j.at("result"), "TTL"); });
  Expected<int64_t> result = std::move(r);
  // etcd answers an unknown or expired lease with TTL 0 (omitted) instead of an error.
  if (result && *result <= 0) {
    result =
        fail(Errc::not_found, fmt::format("Failed to keep lease alive: lease {} not found", id));
  }
  return core_->timed("lease_keep_alive", start, std::move(result));
}

Expected<int64_t> EtcdStore::revoke(int64_t id) {
  const auto start = Clock::now();
  return core_->timed("lease_revoke", start,
                      core_->exchange(
                          "revoke lease", "/v3/lease/revoke", Kind::write,
                          [&] {
                            Json j = Json::object();
                            j["ID"] = std::to_string(id);
                            return j;
                          },
                          [](const Json& j) { return etcd::header_revision(j); }));
}

Expected<LeaseTimeToLive> EtcdStore::time_to_live(int64_t id) {
  const auto start = Clock::now();
  auto r = core_->exchange(
      "get lease time to live", "/v3/lease/timetolive", Kind::read,
      [&] {
        Json j = Json::object();
        j["ID"] = std::to_string(id);
        j["keys"] = true;
        return j;
      },
      [&](const Json& j) -> std::optional<LeaseTimeToLive> {
        LeaseTimeToLive out;
        out.id = id;
        out.ttl = etcd::int_field(j, "TTL");
        if (out.ttl == -1) return std::nullopt;  // etcd's "no such lease"
        out.granted_ttl = etcd::int_field(j, "grantedTTL");
        if (auto keys = j.find("keys"); keys != j.end()) {
          for (const auto& k : *keys) {
            auto key = etcd::base64_decode(k.get<std::string>());
            if (!key) throw std::runtime_error("lease key is not base64");
            out.keys.push_back(std::move(*key));
          }
        }
        // etcd lists a lease's keys from a hash set; the store contract sorts them.
        std::sort(out.keys.begin(), out.keys.end());
        return out;
      });
  Expected<LeaseTimeToLive> result =
      !r   ? Expected<LeaseTimeToLive>(std::unexpected(std::move(r.error())))
      : *r ? Expected<LeaseTimeToLive>(std::move(**r))
           : Expected<LeaseTimeToLive>(
                 fail(Errc::not_found,
                      fmt::format("Failed to get lease time to live: lease {} not found", id)));
  return core_->timed("lease_time_to_live", start, std::move(result));
}

void EtcdStore::set_stats_hook(StatsHook hook) {
  core_->stats.store(hook ? std::make_shared<const StatsHook>(std::move(hook)) : nullptr);
}

std::string EtcdStore::current_endpoint() const {
  return core_->endpoints[core_->preferred.load()];
}

}  // namespace neco::store
