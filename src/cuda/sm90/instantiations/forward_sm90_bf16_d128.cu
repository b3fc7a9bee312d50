// Hopper forward kernel for bfloat16, head dim 128 (one kernel configuration per translation unit: compile time).
#include "cuda/sm90/forward_launch_sm90.cuh"

namespace s2attn::cuda {
S2ATTN_INSTANTIATE_FORWARD_SM90(cutlass::bfloat16_t, 128)
}  // namespace s2attn::cuda
