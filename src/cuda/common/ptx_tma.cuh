// mbarriers and TMA tensor loads (sm_90+), shared by the Hopper kernels and the paged decode kernel's TMA path.
// The portable translation units are compiled for sm_80 too: there these compile to a trap (the host never
// launches a TMA kernel below compute capability 9.0).
#pragma once
#include <cuda.h>  // CUtensorMap (the type only; no driver call is made from device code)

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define S2ATTN_TMA_ASM(...) __trap()
#else
#define S2ATTN_TMA_ASM(...) asm volatile(__VA_ARGS__)
#endif

namespace s2attn::cuda {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  S2ATTN_TMA_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}

// Makes the barrier inits visible to the async proxy (TMA) before first use.
__device__ __forceinline__ void fence_barrier_init() {
  S2ATTN_TMA_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  S2ATTN_TMA_ASM(
      "{\n .reg .b64 st;\n mbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(smem_u32(bar))
      : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  S2ATTN_TMA_ASM(
      "{\n .reg .b64 st;\n mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(smem_u32(bar)),
      "r"(bytes)
      : "memory");
}

// Adds `bytes` to the current phase's expected transaction count without arriving: a TMA load can then be
// issued before the thread's own arrival, which may wait for other work (the barrier's phase cannot
// complete while an arrival is pending, whatever order the bytes and the arrivals come in).
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  S2ATTN_TMA_ASM("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}

// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  S2ATTN_TMA_ASM(
      "{\n"
      " .reg .pred done;\n"
      "wait_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      " @!done bra wait_%=;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

__device__ __forceinline__ void prefetch_tensormap(const CUtensorMap* map) {
  S2ATTN_TMA_ASM("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// A 4-D TMA box load (coordinates innermost first) into shared memory, completing on `bar`. Out-of-range
// elements (negative or past an extent) are filled with zeros and still count toward the transaction bytes.
__device__ __forceinline__ void tma_load_4d(const CUtensorMap* map, void* dst, uint64_t* bar, int c0, int c1,
                                            int c2, int c3) {
  S2ATTN_TMA_ASM(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, "
      "%6}], [%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}


// Orders this thread's generic-proxy shared-memory writes before later async-proxy (TMA) accesses of the same
// memory: a buffer written with plain stores and then refilled by TMA.
__device__ __forceinline__ void fence_proxy_async_shared() {
  S2ATTN_TMA_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
}

}  // namespace s2attn::cuda
