// Forward kernels of the portable path for bf16, head dim 64 (key tiles 16, 32, 64).
#include "cuda/sm80/forward_launch_sm80.cuh"

namespace s2attn::cuda {
S2ATTN_INSTANTIATE_FORWARD_SM80(__nv_bfloat16, 64)
}  // namespace s2attn::cuda
