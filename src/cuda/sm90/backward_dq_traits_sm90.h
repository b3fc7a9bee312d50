// Tile sizes, warp roles and shared-memory layout of the Hopper (sm_90a) backward's dQ kernel. The kernel
// is the forward's shape (a 128-row query tile resident, key stages of two 64-key boxes streamed), so the
// traits extend the forward's: same GEMM atoms and layouts, a Q and a dO tile, fewer stages.
// Included by the sm_90a translation units only (it needs CuTe).
#pragma once
#include <cstdint>

#include "cuda/sm90/forward_traits_sm90.h"

namespace s2attn::cuda {

template <typename Elem_, int kHeadDim_>
struct DqTraitsSm90 : ForwardTraitsSm90<Elem_, kHeadDim_> {
  using Base = ForwardTraitsSm90<Elem_, kHeadDim_>;
  // Per warpgroup (64 query rows) and stage (128 keys):
  //   S = Q K^T, P = exp2(S * scale * log2e - lse2)     (MmaS, as the forward's S)
  //   dP = dO V^T                                     (MmaS again, dO in Q's place, V in K's)
  //   dS = P (dP - dsum); dQ += dS K                  (MmaO: dS from registers, K read as (D, keys) like V)
  // K is read by the first and the last GEMM, V by the second: a stage holds K and V until its dQ GEMM.
  // Q + dO: 64 KiB at D = 128; a stage (K + V) 64 KiB: 2 stages, 192 KiB of 227. At D = 64 everything
  // halves: 4 stages (160 KiB) keep the bytes in flight of D = 128's two.
  static constexpr int kStages = kHeadDim_ == 64 ? 4 : 2;
  // Registers: dQ (64 x D fp32: 64 per thread at D = 128), S then P (64 x 128 fp32: 64), dP (64), dS
  // (16-bit: 32, written as P and dP die), the rows' statistics. dS from the fp32 P needs dP in registers of
  // its own: 224 for the consumers (at 216 they spilled 768 bytes), which leaves the producer 56 for the
  // forward's key-tile walk (88 bytes of spills there, none in the consumers' loop). Before, P was packed to
  // 16 bits so that dP could take S's registers, and unpacked again for dS: ~130 more instructions per stage
  // and warp (SASS: the stage loop 916 -> 787 at D = 128, 874 -> 745 at D = 64).
  static constexpr int kProducerRegs = 56;
  static constexpr int kConsumerRegs = 224;
  static_assert(setmaxnreg_fits_sm90(kProducerRegs, kConsumerRegs, Base::kConsumerWarpgroups, Base::kThreads),
                "setmaxnreg shares out the CTA's registers at launch");
};

template <class T>
struct DqSharedStorageSm90 {
  alignas(1024) typename T::Elem q[T::kQElems];     // [consumer wg][chunk][64 rows][64]
  alignas(1024) typename T::Elem dout[T::kQElems];  // the same layout
  alignas(1024) typename T::Elem k[T::kStages][T::kTileElems];  // [chunk][128 rows][64]
  alignas(1024) typename T::Elem v[T::kStages][T::kTileElems];
  alignas(8) uint64_t k_full[T::kStages];
  uint64_t k_empty[T::kStages];
  uint64_t v_full[T::kStages];
  uint64_t v_empty[T::kStages];
  uint64_t q_full;   // Q and dO of the unit
  uint64_t q_empty;
};

}  // namespace s2attn::cuda
