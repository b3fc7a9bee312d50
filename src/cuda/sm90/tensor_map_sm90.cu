// Host helpers shared by the Hopper forward and backward fronts: TMA descriptor encoding (the driver's
// cuTensorMapEncodeTiled, fetched once through the runtime), the alignment rules TMA and the epilogues need,
// the SM count, and which (dtype, head dim) kernels this build has.
#include "cuda/sm90/tensor_map_sm90.h"

#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled

#include <array>
#include <atomic>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/sm90/variants_sm90.h"
#include "s2attn/errors.h"

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

// [batch, seq, head, dim] operand -> 4-D tensor map (dim innermost), boxes of 64 rows x 64 elements with
// the 128-byte swizzle the wgmma layouts expect. Extents of 1 get a harmless stride (never stepped along).
CUtensorMap make_tensor_map_sm90(const void* base, CUtensorMapDataType dtype, int64_t batch, int64_t seq, int64_t heads,
                            int64_t dim, const SeqStrides& s) {
  auto stride_bytes = [&](int64_t stride, int64_t extent) {
    return static_cast<cuuint64_t>(extent <= 1 ? dim * 2 : stride * 2);
  };
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(dim), static_cast<cuuint64_t>(seq),
                              static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batch)};
  const cuuint64_t strides[3] = {stride_bytes(s.seq, seq), stride_bytes(s.head, heads), stride_bytes(s.batch, batch)};
  const cuuint32_t box[4] = {64, 64, 1, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = tensor_map_encoder()(&map, dtype, 4, const_cast<void*>(base), dims, strides, box, elem_strides,
                                          CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                          CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    throw DeviceError("cuTensorMapEncodeTiled failed with CUresult " + std::to_string(static_cast<int>(r)));
  }
  return map;
}

int sm_count_sm90(int device) {
  static std::array<std::atomic<int>, 64> cache{};
  if (device >= 0 && device < 64) {
    const int n = cache[device].load(std::memory_order_relaxed);
    if (n != 0) return n;
  }
  int n = 0;
  S2_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  if (device >= 0 && device < 64) cache[device].store(n, std::memory_order_relaxed);
  return n;
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
