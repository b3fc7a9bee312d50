// The paged cache's tensor maps (paged_tma.h).
#include "cuda/common/tma_map.h"
#include "inference/cuda/paged_tma.h"

namespace s2attn::cuda {

CUtensorMap paged_kv_tma_map(const PagedParams& p, const void* base, int64_t page_stride, int64_t token_stride,
                             int64_t head_stride, uint32_t rows) {
  const int64_t heads = p.head_paged ? 1 : p.num_kv_heads;
  auto bytes = [&](int64_t stride, int64_t extent) {  // an extent of 1 is never stepped along
    return static_cast<uint64_t>(extent <= 1 ? int64_t(p.head_dim) * 2 : stride * 2);
  };
  const uint64_t dims[4] = {static_cast<uint64_t>(p.head_dim), static_cast<uint64_t>(heads),
                            static_cast<uint64_t>(p.page_size), static_cast<uint64_t>(p.num_pages)};
  const uint64_t strides[3] = {bytes(head_stride, heads), bytes(token_stride, p.page_size),
                               bytes(page_stride, p.num_pages)};
  const uint32_t box[4] = {64, 1, rows, 1};
  return make_tma_map(base, tma_dtype_16bit(p.dtype), 4, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B);
}

}  // namespace s2attn::cuda
