// Parallel loops for the CPU backend: a fork-join over a task range with dynamic scheduling (an atomic
// counter hands out the next task index), so callers that order their tasks longest first get an LPT-like
// schedule. Threads are started per call and joined before it returns: no global state, nothing to shut
// down, safe across fork(). Tasks must write disjoint outputs; results then do not depend on the schedule.
#pragma once
#include <cstdint>
#include <functional>

namespace s2attn::cpu {

// Threads a call with `requested` threads uses: requested > 0 as is; 0: the environment variable
// S2ATTN_NUM_THREADS if it is a positive integer, else std::thread::hardware_concurrency() (at least 1).
int resolve_num_threads(int requested);

// Runs task(0) ... task(num_tasks - 1), each exactly once, on up to resolve_num_threads(num_threads)
// threads (the calling thread is one of them). Runs inline when one thread is enough. The first exception
// a task throws stops the hand-out of new tasks and is rethrown here after every thread has finished.
void parallel_for(int64_t num_tasks, int num_threads, const std::function<void(int64_t task)>& task);

}  // namespace s2attn::cpu
