// Backward kernels of the portable path for bf16, head dim 128 (KV kernel: query steps 16, 32, 64, and the 2 x 2 kernel; dQ
// kernel: key tiles 16, 32, 64; row pre- and post-process).
#include "cuda/sm80/backward_launch_sm80.cuh"

namespace s2attn::cuda {
S2ATTN_INSTANTIATE_BACKWARD_SM80(__nv_bfloat16, 128)
S2ATTN_INSTANTIATE_BACKWARD_KV_2X2_SM80(__nv_bfloat16)
}  // namespace s2attn::cuda
