// The paged decode kernel's TMA path (sm_90): the cache's K and V as tensor maps, one box per page and
// 64-element half of a key row (docs/inference.md, "a TMA box per page"). Built on the host per call,
// passed as a __grid_constant__ kernel parameter of every paged tensor-core kernel (unused but by the TMA
// instantiation).
#pragma once
#include <cuda.h>  // CUtensorMap

#include <cstdint>

namespace s2attn::cuda {

struct PagedTmaMaps {
  CUtensorMap k;  // {D, KV heads (1 when head-paged), page_size, num_pages}, boxes {64, 1, rows, 1}
  CUtensorMap v;
  int32_t rows = 0;  // key rows per box: min(page_size, block_size, 64), a power of two >= 8
};

}  // namespace s2attn::cuda
