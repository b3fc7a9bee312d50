#include "cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace s2attn::cpu {

int resolve_num_threads(int requested) {
  if (requested > 0) return requested;
  if (const char* env = std::getenv("S2ATTN_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n > 0) return static_cast<int>(std::min<long>(n, 1 << 16));
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

void parallel_for(int64_t num_tasks, int num_threads, const std::function<void(int64_t task)>& task) {
  if (num_tasks <= 0) return;
  const int64_t threads = std::min<int64_t>(resolve_num_threads(num_threads), num_tasks);
  if (threads <= 1) {
    for (int64_t t = 0; t < num_tasks; ++t) task(t);
    return;
  }

  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&]() {
    for (;;) {
      const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= num_tasks) return;
      try {
        task(t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(num_tasks, std::memory_order_relaxed);  // hand out nothing more
        return;
      }
    }
  };

  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  try {
    for (int64_t i = 1; i < threads; ++i) pool.emplace_back(worker);
  } catch (...) {
    // Could not start every thread (resource limits): the ones started and this thread do the work.
  }
  worker();
  for (std::thread& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace s2attn::cpu
