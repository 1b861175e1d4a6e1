// A fixed pool of worker threads and parallel_for over an index range. The calling thread takes
// part in the work; a parallel_for issued from inside a worker runs inline (no nested pools).
#pragma once
#include <cstdint>
#include <functional>

namespace smelt {

// Threads used by parallel_for (the caller included). Defaults to SMELT_NUM_THREADS or the core count.
int num_threads();
void set_num_threads(int n);

// Splits [begin, end) into chunks of at least `grain` indices and calls fn(chunk_begin, chunk_end)
// on the pool; returns when all are done. Exceptions from fn are rethrown on the caller.
void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Calls fn(i) for every i in [0, n), each index claimed on its own by the next free thread: for
// work already cut into tasks sized for balance (GEMM tiles), where parallel_for's chunks of
// several tasks would leave one thread up to a whole chunk behind the other at the end.
void parallel_tasks(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace smelt
