#include "agent/store/watch_hub.hpp"

#include <exception>
#include <utility>

#include "agent/log/log.hpp"

namespace neco::store {
namespace {
const log::Logger& logger() {
  static const log::Logger l("store");
  return l;
}
}  // namespace

struct WatchHub::Watcher {
  KeyRange range;
  int64_t min_revision = 0;  // live events below this were covered by replay or not asked for
  bool prev_kv = false;
  WatchCallback callback;
  std::thread::id dispatcher;
  std::mutex callback_mu;  // held while the callback runs, so cancel() can wait it out
  std::atomic<bool> cancelled{false};
};

namespace {
class WatchHandle final : public Watch {
 public:
  explicit WatchHandle(std::shared_ptr<WatchHub::Watcher> w) : w_(std::move(w)) {}
  ~WatchHandle() override { cancel(); }
  void cancel() override;

 private:
  std::shared_ptr<WatchHub::Watcher> w_;
};
}  // namespace

void WatchHandle::cancel() {
  w_->cancelled.store(true);
  // From inside a callback the dispatcher already holds callback_mu and re-checks the flag
  // before every call; elsewhere taking the mutex waits for a running callback to finish.
  if (std::this_thread::get_id() == w_->dispatcher) return;
  std::lock_guard lock(w_->callback_mu);
}

WatchHub::WatchHub() {
  thread_ = std::thread([this] { run(); });
}

WatchHub::~WatchHub() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::unique_ptr<Watch> WatchHub::register_watcher(const WatchRequest& request,
                                                  WatchCallback callback,
                                                  std::vector<WatchResponse> replay) {
  auto w = std::make_shared<Watcher>();
  w->range = request.range;
  w->min_revision = request.start_revision;
  w->prev_kv = request.prev_kv;
  w->callback = std::move(callback);
  w->dispatcher = thread_.get_id();
  {
    std::lock_guard lock(mu_);
    queue_.push_back(Item{w, std::move(replay), {}});
  }
  cv_.notify_one();
  return std::make_unique<WatchHandle>(std::move(w));
}

void WatchHub::publish(int64_t revision, std::vector<Event> events) {
  Item item;
  item.live.revision = revision;
  item.live.events = std::move(events);
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(item));
  }
  cv_.notify_one();
}

void WatchHub::deliver(Watcher& w, const WatchResponse& response) {
  std::lock_guard lock(w.callback_mu);
  if (w.cancelled.load()) return;
  try {
    w.callback(response);
  } catch (const std::exception& e) {
    // A throwing callback must not take the dispatcher (and every other watch) down with it.
    logger().error("Watch callback on '{}' threw: {}", w.range.key, e.what());
  } catch (...) {
    logger().error("Watch callback on '{}' threw a non-standard exception", w.range.key);
  }
}

void WatchHub::run() {
  for (;;) {
    Item item;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    if (item.watcher) {
      bool ended = false;
      for (const auto& r : item.replay) {
        deliver(*item.watcher, r);
        ended = ended || r.error.has_value();
      }
      if (!ended) active_.push_back(std::move(item.watcher));
      continue;
    }
    const auto& live = item.live;
    std::erase_if(active_, [](const auto& w) { return w->cancelled.load(); });
    for (const auto& w : active_) {
      if (live.revision < w->min_revision) continue;
      WatchResponse out;
      out.revision = live.revision;
      for (const auto& ev : live.events) {
        if (!w->range.contains(ev.kv.key)) continue;
        out.events.push_back(ev);
        if (!w->prev_kv) out.events.back().prev_kv.reset();
      }
      if (!out.events.empty()) deliver(*w, out);
    }
  }
}

}  // namespace neco::store
