// Host helpers shared by the Hopper forward and backward fronts: their TMA descriptors (tma_map.h), the
// alignment rules TMA and the epilogues need, and which (dtype, head dim) kernels this build has.
#include "cuda/sm90/tensor_map_sm90.h"

#include "cuda/common/tma_map.h"
#include "cuda/sm90/variants_sm90.h"

namespace s2attn::cuda {

// TMA: 16-byte aligned base, strides that are multiples of 16 bytes (below 2^40) for every extent > 1.
bool tma_ok_sm90(const void* ptr, const SeqStrides& s, int64_t batch, int64_t seq, int64_t heads) {
  auto ok = [](int64_t stride, int64_t extent) {
    return extent <= 1 || (stride > 0 && stride % 8 == 0 && stride < (int64_t(1) << 38));
  };
  return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0 && ok(s.batch, batch) && ok(s.seq, seq) && ok(s.head, heads);
}

// The epilogue writes 4-byte pairs of a row; rows 16-byte aligned as on the portable path.
bool rows_ok_sm90(const void* ptr, const SeqStrides& s, int64_t batch, int64_t seq, int64_t heads) {
  auto ok = [](int64_t stride, int64_t extent) { return extent <= 1 || stride % 8 == 0; };
  return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0 && ok(s.batch, batch) && ok(s.seq, seq) && ok(s.head, heads);
}

// [batch, seq, head, dim] operand -> 4-D tensor map (dim innermost), boxes of 64 rows x 64 elements with
// the 128-byte swizzle the wgmma layouts expect. Extents of 1 get a harmless stride (never stepped along).
CUtensorMap make_tensor_map_sm90(const void* base, CUtensorMapDataType dtype, int64_t batch, int64_t seq, int64_t heads,
                            int64_t dim, const SeqStrides& s) {
  auto stride_bytes = [&](int64_t stride, int64_t extent) {
    return static_cast<uint64_t>(extent <= 1 ? dim * 2 : stride * 2);
  };
  const uint64_t dims[4] = {static_cast<uint64_t>(dim), static_cast<uint64_t>(seq), static_cast<uint64_t>(heads),
                            static_cast<uint64_t>(batch)};
  const uint64_t strides[3] = {stride_bytes(s.seq, seq), stride_bytes(s.head, heads), stride_bytes(s.batch, batch)};
  const uint32_t box[4] = {64, 64, 1, 1};
  return make_tma_map(base, dtype, 4, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B);
}

// Which kernels this build has (S2ATTN_SM90_VARIANTS in sm90.cmake).
bool variant_built_sm90(DType dtype, int head_dim) {
  using Bf16 = cutlass::bfloat16_t;
  using F16 = cutlass::half_t;
  const bool bf16 = dtype == DType::bf16;
  if (head_dim == 128) return bf16 ? variant_built_sm90_v<Bf16, 128>() : variant_built_sm90_v<F16, 128>();
  if (head_dim == 64) return bf16 ? variant_built_sm90_v<Bf16, 64>() : variant_built_sm90_v<F16, 64>();
  return false;
}

}  // namespace s2attn::cuda
