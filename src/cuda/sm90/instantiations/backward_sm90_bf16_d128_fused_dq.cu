// Hopper backward KV kernel with fused dQ for bf16, head dim 128 (its own translation unit: compile time).
#include "cuda/sm90/backward_launch_sm90.cuh"

namespace s2attn::cuda {
S2ATTN_INSTANTIATE_BACKWARD_SM90_FUSED_DQ(cutlass::bfloat16_t)
}  // namespace s2attn::cuda
