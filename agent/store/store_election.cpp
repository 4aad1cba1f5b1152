#include "agent/store/store_election.hpp"

#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include "agent/log/log.hpp"

namespace neco::store {

using Clock = std::chrono::steady_clock;

struct LeaderLoop::Impl {
  Store& store;
  LeaderLoopOptions opt;
  std::function<void(int64_t)> on_elected;
  std::function<void()> on_deposed;
  std::string key;
  log::Logger logger{"election"};

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  bool poked = false;  // the leader key changed (watch) or a fenced write failed
  LeaderInfo info;     // guarded by mu

  // Guarded by mu: past this instant our lease may have expired on the store, so we are no
  // longer leader even if the election thread is stuck in a call to an unreachable store.
  Clock::time_point lease_deadline{};

  // Owned by the election thread.
  int64_t lease = 0;
  int64_t term = 0;
  std::thread thread;
  std::thread deadline_thread;

  Impl(Store& s, LeaderLoopOptions o, std::function<void(int64_t)> elected,
       std::function<void()> deposed)
      : store(s),
        opt(std::move(o)),
        on_elected(std::move(elected)),
        on_deposed(std::move(deposed)),
        key(opt.prefix + "/leader") {}

  // A third of the TTL, as etcd's clients do: two keep-alives may fail before the lease dies.
  std::chrono::milliseconds interval() const {
    return std::chrono::milliseconds(opt.ttl_seconds * 1000 / 3);
  }

  // How long a lease surely lives after a keep-alive was *sent*: the store restarts the TTL
  // when it receives the call, which is later. A margin covers clock-rate differences.
  Clock::duration lease_life() const {
    const auto ttl = std::chrono::milliseconds(opt.ttl_seconds * 1000);
    return ttl - std::max<std::chrono::milliseconds>(ttl / 6, std::chrono::milliseconds(200));
  }

  // Waits `d`, or less if poked (when `wake_on_poke`) or stopping; false once stopping.
  bool wait(std::chrono::milliseconds d, bool wake_on_poke = true) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, d, [&] { return stopping || (wake_on_poke && poked); });
    poked = false;
    return !stopping;
  }

  void poke() {
    {
      std::lock_guard lock(mu);
      poked = true;
    }
    cv.notify_all();
  }

  void observe(std::string leader, int64_t t) {
    std::lock_guard lock(mu);
    info.leader = std::move(leader);
    info.term = t;
  }

  void become_leader(int64_t t, Clock::time_point sent) {
    term = t;
    {
      std::lock_guard lock(mu);
      info = LeaderInfo{opt.candidate, t, true, info.transitions + 1};
      lease_deadline = sent + lease_life();
    }
    cv.notify_all();
    logger.info("Elected leader '{}' with term {}", opt.candidate, t);
    if (on_elected) on_elected(t);
  }

  // Gives up the leadership; false when the deadline thread already did.
  bool mark_not_leader() {
    std::lock_guard lock(mu);
    if (!info.is_leader) return false;
    info.is_leader = false;
    info.leader.clear();
    info.term = 0;
    ++info.transitions;
    return true;
  }

  void step_down(std::string_view why, bool voluntary = false) {
    if (!mark_not_leader()) {
      term = 0;
      return;
    }
    if (voluntary) {
      logger.info("Stepping down as leader '{}' of term {}: {}", opt.candidate, term, why);
    } else {
      logger.warning("Stepping down as leader '{}' of term {}: {}", opt.candidate, term, why);
    }
    term = 0;
    if (on_deposed) on_deposed();
  }

  bool am_leader() const {
    std::lock_guard lock(mu);
    return info.is_leader;
  }

  // One campaign attempt; true when we won. Reclaims our own stale key at most once per call.
  bool campaign(bool may_reclaim = true) {
    const auto sent = Clock::now();
    if (lease == 0) {
      auto g = store.grant(opt.ttl_seconds);
      if (!g) {
        logger.warning("Failed to grant election lease: {}", g.error().message);
        return false;
      }
      lease = g->id;
    } else if (!store.keep_alive(lease)) {
      lease = 0;  // expired while we were following: grant a fresh one right away
      return campaign(may_reclaim);
    }
    Txn t;
    t.compares.push_back(Compare::create_revision(key, CompareOp::equal, 0));
    t.success.push_back(Op::make_put(key, opt.candidate, lease));
    t.failure.push_back(Op::make_range(RangeRequest{KeyRange::exact(key), 1}));
    auto r = store.txn(t);
    if (!r) {
      logger.warning("Failed to campaign for '{}': {}", key, r.error().message);
      return false;
    }
    if (r->succeeded) {
      // The put created the key, so its create_revision is the txn's revision.
      become_leader(r->revision, sent);
      return true;
    }
    const auto& kvs = r->responses.front().range.kvs;
    if (kvs.empty()) return false;  // deleted between compare and read: retry on the poke
    const auto& held = kvs.front();
    observe(held.value, held.create_revision);
    if (held.lease == lease && held.value == opt.candidate) {
      // Our own key on the lease we just renewed: we stepped down on a deadline while the store
      // was slow, but the term is still ours, so take it up again rather than block everyone.
      become_leader(held.create_revision, sent);
      return true;
    }
    if (may_reclaim && opt.reclaim_own_key && held.value == opt.candidate && held.lease != lease &&
        held.lease != 0) {
      logger.info("Reclaiming leader key '{}' from a previous incarnation (lease {})", key,
                  held.lease);
      if (auto rv = store.revoke(held.lease); rv) return campaign(false);
    }
    return false;
  }

  // One leader check; false when we must step down.
  bool hold() {
    if (!am_leader()) {
      step_down("lease deadline passed");  // the deadline thread already told everyone
      return false;
    }
    const auto sent = Clock::now();
    auto ka = store.keep_alive(lease);
    if (!ka) {
      if (ka.error().code == Errc::not_found) {
        lease = 0;
        step_down("lease lost");
        return false;
      }
      // The store is unreachable: we cannot know whether the lease lives, so keep leading only
      // until it would have expired (the deadline thread enforces it if this call hangs).
      if (!am_leader()) {
        step_down("keep-alive failing: " + ka.error().message);
        return false;
      }
      return true;
    }
    {
      std::lock_guard lock(mu);
      if (info.is_leader) lease_deadline = sent + lease_life();
    }
    auto r = store.range(RangeRequest{KeyRange::exact(key), 1});
    if (r && (r->kvs.empty() || r->kvs.front().create_revision != term)) {
      step_down("leader key is no longer ours");
      return false;
    }
    return true;
  }

  void resign() {
    if (term != 0) {
      Txn t;
      t.compares.push_back(Compare::create_revision(key, CompareOp::equal, term));
      t.success.push_back(Op::make_delete(KeyRange::exact(key)));
      if (auto r = store.txn(t); !r) {
        logger.warning("Failed to resign leader key '{}': {}", key, r.error().message);
      }
      step_down("resigned", true);
    }
    if (lease != 0) {
      if (auto r = store.revoke(lease); !r && r.error().code != Errc::not_found) {
        logger.warning("Failed to revoke election lease {}: {}", lease, r.error().message);
      }
      lease = 0;
    }
  }

  void run() {
    auto w = store.watch(WatchRequest{KeyRange::exact(key), 0, false},
                         [this](const WatchResponse&) { poke(); });
    if (!w) {
      // Polling every interval still works; the watch only makes takeover faster.
      logger.warning("Failed to watch '{}': {}", key, w.error().message);
    }
    while (!stopping_now()) {
      if (!am_leader()) {
        if (campaign()) continue;
        if (!wait(interval())) break;
        continue;
      }
      if (!wait(interval())) break;
      if (!hold()) {
        // Let a healthy peer take over rather than flapping straight back.
        if (!wait(interval(), false)) break;
      }
    }
    if (w) (*w)->cancel();
    resign();
  }

  // Steps down when the lease deadline passes, however stuck the election thread is in a call
  // to the store: a leader cut off from the store must stop acting before anyone else can win.
  void watch_deadline() {
    std::unique_lock lock(mu);
    while (!stopping) {
      if (!info.is_leader) {
        cv.wait(lock, [&] { return stopping || info.is_leader; });
        continue;
      }
      const auto deadline = lease_deadline;
      if (Clock::now() < deadline) {
        cv.wait_until(lock, deadline, [&] { return stopping || lease_deadline != deadline; });
        continue;
      }
      info.is_leader = false;
      info.leader.clear();
      info.term = 0;
      ++info.transitions;
      lock.unlock();
      logger.warning("Stepping down as leader '{}': no keep-alive confirmed the lease in time",
                     opt.candidate);
      if (on_deposed) on_deposed();
      poke();
      lock.lock();
    }
  }

  bool stopping_now() const {
    std::lock_guard lock(mu);
    return stopping;
  }
};

LeaderLoop::LeaderLoop(Store& store, LeaderLoopOptions options,
                       std::function<void(int64_t term)> on_elected,
                       std::function<void()> on_deposed)
    : impl_(std::make_unique<Impl>(store, std::move(options), std::move(on_elected),
                                   std::move(on_deposed))) {}

LeaderLoop::~LeaderLoop() {
  stop();
}

Expected<void> LeaderLoop::start() {
  if (impl_->opt.candidate.empty()) {
    return fail(Errc::invalid_argument, "election needs a candidate name");
  }
  if (impl_->opt.ttl_seconds <= 0) {
    return fail(Errc::invalid_argument, "election lease TTL must be positive");
  }
  std::lock_guard lock(impl_->mu);
  if (impl_->thread.joinable() || impl_->stopping) return {};
  impl_->thread = std::thread([raw = impl_.get()] { raw->run(); });
  impl_->deadline_thread = std::thread([raw = impl_.get()] { raw->watch_deadline(); });
  return {};
}

void LeaderLoop::stop() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable() && impl_->thread.get_id() != std::this_thread::get_id()) {
    impl_->thread.join();
  }
  if (impl_->deadline_thread.joinable() &&
      impl_->deadline_thread.get_id() != std::this_thread::get_id()) {
    impl_->deadline_thread.join();
  }
}

LeaderInfo LeaderLoop::current() const {
  std::lock_guard lock(impl_->mu);
  return impl_->info;
}

const std::string& LeaderLoop::leader_key() const {
  return impl_->key;
}

Expected<TxnResponse> LeaderLoop::fenced_txn(const Txn& txn) {
  int64_t term = 0;
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->info.is_leader || Clock::now() >= impl_->lease_deadline) {
      return fail(Errc::failed_precondition,
                  fmt::format("'{}' is not the leader", impl_->opt.candidate));
    }
    term = impl_->info.term;
  }
  // The caller's txn runs nested behind the fence, so neither of its branches can write once
  // our term is over.
  Txn fenced;
  fenced.compares.push_back(Compare::create_revision(impl_->key, CompareOp::equal, term));
  fenced.success.push_back(Op::make_txn(txn));
  auto r = impl_->store.txn(fenced);
  if (!r) return std::unexpected(r.error());
  if (!r->succeeded) {
    impl_->poke();  // we have been deposed: let the loop notice now rather than next tick
    return fail(Errc::failed_precondition,
                fmt::format("leadership of term {} is lost; write refused", term));
  }
  return *r->responses.front().txn;
}

}  // namespace neco::store
