// The paged decode kernel's TMA path (sm_90): the cache's K and V as tensor maps, one box per page and
// 64-element half of a key row (docs/inference.md, "a TMA box per page"). Built on the host per call,
// passed as a __grid_constant__ kernel parameter of every paged tensor-core kernel (unused but by the TMA
// instantiation).
#pragma once
#include <cuda.h>  // CUtensorMap

#include <cstdint>

#include "inference/paged_params.h"

namespace s2attn::cuda {

// The cache's K or V pages (base and element strides of one of them) as a 4-D tensor map {D, KV heads (1
// when head-paged), page_size, num_pages}, boxes of {64, 1, rows, 1}, 128-byte swizzle: the decode kernel's
// TMA path and the Hopper forward's paged prefill. Strides must be 16-byte multiples. Host only
// (paged_tma_map.cpp).
CUtensorMap paged_kv_tma_map(const PagedParams& p, const void* base, int64_t page_stride, int64_t token_stride,
                             int64_t head_stride, uint32_t rows);

struct PagedTmaMaps {
  CUtensorMap k;  // {D, KV heads (1 when head-paged), page_size, num_pages}, boxes {64, 1, rows, 1}
  CUtensorMap v;
  int32_t rows = 0;  // key rows per box: min(page_size, block_size, 64), a power of two >= 8
};

}  // namespace s2attn::cuda
