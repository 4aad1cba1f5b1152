// A bounded pool of threads for blocking calls (SQLite, files, child processes, statfs), so
// the event loop never blocks. Coroutines await results; every call can carry a deadline,
// after which the caller gets deadline_exceeded and moves on while the stuck call finishes
// (or not) on its thread — a stuck dependency costs its caller, never the event loop.
#pragma once

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>

#include "agent/util/error.hpp"

namespace neco {

class WorkerPool {
 public:
  // `threads` workers; at most `max_queued` calls waiting or running before new ones are
  // refused with unavailable (back-pressure instead of an unbounded queue).
  WorkerPool(std::size_t threads, std::size_t max_queued)
      : pool_(threads), max_queued_(max_queued) {}
  ~WorkerPool() { join(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs f() (returning Expected<R>) on a worker; resumes the awaiting coroutine on its own
  // executor with the result, or deadline_exceeded when `deadline` passes first.
  template <class F>
  auto run(F f, std::chrono::milliseconds deadline)
      -> boost::asio::awaitable<std::invoke_result_t<F>>;

  // Calls waiting or running now.
  std::size_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  // Calls that ran past their deadline (their results were dropped).
  std::uint64_t timeouts() const { return timeouts_.load(std::memory_order_relaxed); }

  // Waits for running calls to end; later calls are refused.
  void join() {
    stopped_.store(true);
    pool_.join();
  }

 private:
  boost::asio::thread_pool pool_;
  std::size_t max_queued_;
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<std::uint64_t> timeouts_{0};
  std::atomic<bool> stopped_{false};
};

// Not a coroutine itself: GCC 12 mis-destroys lambdas captured inside co_await expressions of
// a coroutine, so the initiation below runs as ordinary code and only the caller co_awaits.
template <class F>
auto WorkerPool::run(F f, std::chrono::milliseconds deadline)
    -> boost::asio::awaitable<std::invoke_result_t<F>> {
  using R = std::invoke_result_t<F>;
  static_assert(std::is_same_v<R, Expected<typename R::value_type>>,
                "WorkerPool::run needs a callable returning neco::Expected<T>");
  auto initiation = [this, deadline](auto handler, F fn) {
    using Handler = decltype(handler);
    // The awaiting coroutine's executor: results are delivered there.
    auto executor = boost::asio::get_associated_executor(handler);
    auto refuse = [&](Error e) {
      boost::asio::post(executor, [h = std::move(handler), e = std::move(e)]() mutable {
        h(R(std::unexpected(std::move(e))));
      });
    };
    if (stopped_.load()) return refuse(Error{Errc::cancelled, "worker pool is shutting down"});
    if (in_flight_.load(std::memory_order_relaxed) >= max_queued_) {
      return refuse(Error{Errc::unavailable, "worker pool saturated; try again later"});
    }
    // Whoever comes first, the worker or the timer, takes the handler.
    struct State {
      std::mutex mutex;
      std::optional<Handler> handler;
      boost::asio::steady_timer timer;
      explicit State(const boost::asio::any_io_executor& ex) : timer(ex) {}
      std::optional<Handler> take() {
        std::lock_guard lock(mutex);
        std::optional<Handler> h = std::move(handler);
        handler.reset();
        return h;
      }
    };
    auto state = std::make_shared<State>(executor);
    state->handler.emplace(std::move(handler));
    state->timer.expires_after(deadline);
    state->timer.async_wait([this, state](boost::system::error_code ec) {
      if (ec) return;  // cancelled: the worker finished first
      if (auto h = state->take()) {
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        (*h)(R(std::unexpected(
            Error{Errc::deadline_exceeded, "blocking call ran past its deadline"})));
      }
    });
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    boost::asio::post(pool_, [this, state, executor, fn = std::move(fn)]() mutable {
      R result = [&]() -> R {
        try {
          return fn();
        } catch (const std::exception& e) {
          return std::unexpected(Error{Errc::internal, e.what()});
        }
      }();
      in_flight_.fetch_sub(1, std::memory_order_relaxed);
      boost::asio::post(executor, [state, result = std::move(result)]() mutable {
        state->timer.cancel();
        if (auto h = state->take()) (*h)(std::move(result));
      });
    });
  };
  return boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void(R)>(
      std::move(initiation), boost::asio::use_awaitable, std::move(f));
}

}  // namespace neco
