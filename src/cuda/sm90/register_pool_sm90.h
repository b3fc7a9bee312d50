// The registers a Hopper kernel's warpgroups can share out with setmaxnreg.
#pragma once

namespace s2attn::cuda {

// setmaxnreg moves registers within the CTA's allocation at launch, which is the launch-bound count per
// thread (the 64 Ki register file over `threads`, in steps of 8) times `threads`, not the whole register
// file: an increase beyond it never completes (the requesting warps wait for registers nobody frees).
constexpr int cta_register_pool_sm90(int threads) { return (65536 / threads) / 8 * 8 * threads; }

// Whether one producer warpgroup at producer_regs and consumer_warpgroups at consumer_regs (per thread, as
// given to setmaxnreg) fit that pool.
constexpr bool setmaxnreg_fits_sm90(int producer_regs, int consumer_regs, int consumer_warpgroups, int threads) {
  return producer_regs * 128 + consumer_regs * 128 * consumer_warpgroups <= cta_register_pool_sm90(threads);
}

}  // namespace s2attn::cuda
