// Host helpers shared by the Hopper fronts (forward_sm90.cu, backward_sm90.cu); defined in tensor_map_sm90.cu.
#pragma once
#include <cuda.h>  // CUtensorMap

#include <cstdint>

#include "common/attention_params.h"

namespace s2attn::cuda {

// TMA: 16-byte aligned base, strides that are multiples of 16 bytes (below 2^40) for every extent > 1.
bool tma_ok_sm90(const void* ptr, const SeqStrides& s, int64_t batch, int64_t seq, int64_t heads);

// Epilogues that write 4-byte pairs of a row: rows 16-byte aligned as on the portable path.
bool rows_ok_sm90(const void* ptr, const SeqStrides& s, int64_t batch, int64_t seq, int64_t heads);

// [batch, seq, head, dim] operand -> 4-D tensor map (dim innermost), boxes of 64 rows x 64 elements with the
// 128-byte swizzle the wgmma layouts expect.
CUtensorMap make_tensor_map_sm90(const void* base, CUtensorMapDataType dtype, int64_t batch, int64_t seq,
                                 int64_t heads, int64_t dim, const SeqStrides& s);

// Whether this build has the Hopper kernels of (dtype, head dim) (S2ATTN_SM90_VARIANTS in sm90.cmake).
bool variant_built_sm90(DType dtype, int head_dim);

}  // namespace s2attn::cuda
