// Hopper backward (KV and dQ kernels) for float16, head dim 64 (one kernel configuration per translation unit: compile time).
#include "cuda/sm90/backward_launch_sm90.cuh"

namespace s2attn::cuda {
S2ATTN_INSTANTIATE_BACKWARD_SM90(cutlass::half_t, 64)
}  // namespace s2attn::cuda
