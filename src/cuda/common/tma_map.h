// TMA tensor maps (host): one encoder for every kernel that loads with cp.async.bulk.tensor (the Hopper
// forward and backward, the paged decode kernel's sm_90 path). Defined in tma_map.cpp: the driver's
// cuTensorMapEncodeTiled, fetched once through the runtime, so nothing links libcuda.
#pragma once
#include <cuda.h>  // CUtensorMap

#include <cstdint>

#include "s2attn/tensor.h"  // DType

namespace s2attn::cuda {

// A tiled tensor map of `rank` (<= 5) dimensions, innermost first: dims[i] elements, strides_bytes[i] the
// byte stride of dimension i + 1 (multiples of 16), box[i] elements per copy, no interleave, elementwise
// stride 1, zero fill out of bounds. Throws DeviceError when the driver refuses it.
// The tensor-map element type of a 16-bit operand (bf16, else fp16).
inline CUtensorMapDataType tma_dtype_16bit(DType dtype) {
  return dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
}

CUtensorMap make_tma_map(const void* base, CUtensorMapDataType dtype, int rank, const uint64_t* dims,
                         const uint64_t* strides_bytes, const uint32_t* box, CUtensorMapSwizzle swizzle);

}  // namespace s2attn::cuda
