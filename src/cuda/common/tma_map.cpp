// TMA tensor map encoding (see tma_map.h).
#include "cuda/common/tma_map.h"

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled

#include <atomic>
#include <string>

#include "cuda/common/cuda_check.h"
#include "s2attn/errors.h"

namespace s2attn::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static std::atomic<PFN_cuTensorMapEncodeTiled_v12000> fn{nullptr};
  PFN_cuTensorMapEncodeTiled_v12000 f = fn.load(std::memory_order_acquire);
  if (f == nullptr) {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult query{};
    S2_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &query));
    if (query != cudaDriverEntryPointSuccess || ptr == nullptr) {
      throw DeviceError("the CUDA driver has no cuTensorMapEncodeTiled (TMA needs driver 12.0 or newer)");
    }
    f = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
    fn.store(f, std::memory_order_release);
  }
  return f;
}

}  // namespace

CUtensorMap make_tma_map(const void* base, CUtensorMapDataType dtype, int rank, const uint64_t* dims,
                         const uint64_t* strides_bytes, const uint32_t* box, CUtensorMapSwizzle swizzle) {
  cuuint64_t d[5], s[4];
  cuuint32_t b[5], e[5];
  for (int i = 0; i < rank; ++i) {
    d[i] = static_cast<cuuint64_t>(dims[i]);
    b[i] = static_cast<cuuint32_t>(box[i]);
    e[i] = 1;
    if (i + 1 < rank) s[i] = static_cast<cuuint64_t>(strides_bytes[i]);
  }
  CUtensorMap map;
  const CUresult r = tensor_map_encoder()(&map, dtype, static_cast<cuuint32_t>(rank), const_cast<void*>(base), d, s,
                                          b, e, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                                          CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    throw DeviceError("cuTensorMapEncodeTiled failed with CUresult " + std::to_string(static_cast<int>(r)));
  }
  return map;
}

}  // namespace s2attn::cuda
