#pragma once
/// \file executor.hpp
/// `executor`: how the Q/K path runs its independent tasks (one per head of
/// a layer's degree pass). An engine passes its own thread pool, or asks for
/// threads; the default runs them on the calling thread. The result is the
/// same to the bit whatever runs them: each task writes its own buffers,
/// which are combined afterwards in a fixed order.

#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "config.hpp"

namespace freepruner {

class executor {
 public:
  /// One task: called once with its index.
  using task = std::function<void(index_t)>;
  /// Calls `t(i)` once for each i in [0, count), on any threads and in any
  /// order, and returns when all have returned.
  using runner = std::function<void(index_t count, const task& t)>;

  /// Runs every task on the calling thread, in order.
  executor() = default;

  /// An engine's pool: `run` as `runner` says; `concurrency`, how many tasks
  /// it runs at once (tasks are sized to it).
  executor(int concurrency, runner run) : concurrency_(std::max(1, concurrency)), run_(std::move(run)) {}

  /// `count` threads for each call: the calling thread and count - 1 more,
  /// started and joined by the call (1 or less: the calling thread alone).
  /// With exceptions on, a thread that cannot be started leaves its share to
  /// the others; without them, std::thread aborts.
  static executor threads(int count) {
    if (count <= 1) return {};
    return executor(count, [count](index_t tasks, const task& t) {
      std::atomic<index_t> next{0};
      auto work = [&] {
        for (index_t i = next.fetch_add(1); i < tasks; i = next.fetch_add(1)) t(i);
      };
      std::vector<std::thread> pool;
      const index_t extra = std::min<index_t>(count, tasks) - 1;
      for (index_t k = 0; k < extra; ++k) {
#if FREEPRUNER_USE_EXCEPTIONS
        try {
          pool.emplace_back(work);
        } catch (...) {
          break;
        }
#else
        pool.emplace_back(work);
#endif
      }
      work();
      for (std::thread& thread : pool) thread.join();
    });
  }

  /// How many tasks run at once (1 for the default).
  int concurrency() const noexcept { return concurrency_; }

  /// Runs tasks 0..count-1.
  void operator()(index_t count, const task& t) const {
    if (!run_ || count <= 1) {
      for (index_t i = 0; i < count; ++i) t(i);
      return;
    }
    run_(count, t);
  }

 private:
  int concurrency_ = 1;
  runner run_;
};

}  // namespace freepruner
