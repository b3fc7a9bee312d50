// The registers a Hopper kernel's warpgroups can share out with setmaxnreg.
#pragma once

namespace s2attn::cuda {

// setmaxnreg moves registers within the CTA's allocation at launch, which is the launch-bound count per
// thread (the 64 Ki register file over `threads`, in steps of 8) times `threads`, not the whole register
// file: an increase beyond it never completes (the requesting warps wait for registers nobody frees).
constexpr int cta_register_pool_sm90(int threads) { return (65536 / threads) / 8 * 8 * threads; }

}  // namespace s2attn::cuda
