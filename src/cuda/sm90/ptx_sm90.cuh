// Thin wrappers of the Hopper PTX the sm_90a kernels use beyond CuTe's wgmma: their shared storage, warp roles,
// stage barriers, named barriers (mbarriers and TMA loads: cuda/common/ptx_tma.cuh).
#pragma once
#include <cuda.h>  // CUtensorMap (the type only; no driver call is made from device code)

#include <cstdint>

#include "cuda/common/dependent_launch.cuh"  // grid_launch_dependents, grid_dependency_wait
#include "cuda/common/ptx_tma.cuh"          // mbarriers, TMA loads

namespace s2attn::cuda {

// The kernel's shared storage, at the dynamic shared memory rounded up to 1024 bytes: the 128-byte swizzle of
// TMA and wgmma repeats every 1024 bytes.
// The rounding is an offset into the __shared__ array (not a round trip through an integer address), so the
// compiler still knows the storage is shared memory: plain C++ accesses to it compile to LDS / STS, not to
// generic LD / ST (slower; the backward's per-row statistics were read that way).
template <class Storage>
__device__ __forceinline__ Storage& shared_storage_sm90() {
  extern __shared__ char smem_raw[];
  const uint32_t misalign = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) & 1023u;
  return *reinterpret_cast<Storage*>(smem_raw + ((1024u - misalign) & 1023u));
}

// The dynamic shared memory a kernel using shared_storage_sm90<Storage> asks for: the storage plus the
// slack the base is rounded up by.
template <class Storage>
constexpr int shared_storage_bytes_sm90() {
  return static_cast<int>(sizeof(Storage)) + 1024;
}

// This thread's warpgroup (its role), warp-uniform for ptxas (a shuffle from lane 0): role branches must not
// look divergent around wgmma.
__device__ __forceinline__ int warpgroup_role() {
  return __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 128), 0);
}

// The K and V stage barriers of the forward and dQ kernels (storage members k_full, v_full, k_empty, v_empty
// [kStages]): full on the producer's one arrival (plus the TMA bytes), empty on one arrival per consumer warp.
template <int kStages, class Storage>
__device__ __forceinline__ void init_kv_stage_barriers(Storage& ss, uint32_t consumer_warps) {
  for (int s = 0; s < kStages; ++s) {
    mbar_init(&ss.k_full[s], 1);
    mbar_init(&ss.v_full[s], 1);
    mbar_init(&ss.k_empty[s], consumer_warps);
    mbar_init(&ss.v_empty[s], consumer_warps);
  }
}

// Named barriers among `threads` threads (a multiple of 32).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Four 8 x 8 matrices of 16-bit pairs into shared memory: register i of each thread is matrix i's element pair
// at row lane / 4, columns 2 (lane % 4) + 0, 1 (an mma fragment); lane l gives the address of row l % 8 of
// matrix l / 8.
__device__ __forceinline__ void stmatrix_x4(uint32_t smem_addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(smem_addr), "r"(r0),
               "r"(r1), "r"(r2), "r"(r3)
               : "memory");
}

// Bulk reduction (sm_90): dst[0 .. bytes / 4) += src's floats, from shared memory to global memory, done by the
// TMA unit asynchronously; the issuing thread tracks it as a bulk group. Both addresses 16-byte aligned, bytes
// a multiple of 16.
__device__ __forceinline__ void bulk_reduce_add_f32(float* dst, uint32_t src_smem, uint32_t bytes) {
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(dst),
               "r"(src_smem), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void bulk_commit_group() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// this thread's bulk groups have read their shared memory (it may be overwritten)
__device__ __forceinline__ void bulk_wait_read_all() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
// this thread's bulk groups are complete (their global writes performed)
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

// Ends the basic block after the arithmetic that produced a and b. ptxas places a wgmma wait at the top of
// its basic block, above independent arithmetic written before it: the forward's softmax (MUFU.EX2) ran
// after WARPGROUP.DEPBAR, serialised behind the P V GEMM it was written to overlap. A branch on values
// that arithmetic produces keeps the wait below it. The branch body is a no-op (taken only when both
// words are all ones).
__device__ __forceinline__ void block_boundary_after(float a, float b) {
  if ((__float_as_uint(a) & __float_as_uint(b)) == 0xffffffffu) asm volatile("nanosleep.u32 0;\n");
}

}  // namespace s2attn::cuda
