// The CUDA backends as the front door sees them. Compiled only when CMake finds nvcc (S2ATTN_WITH_CUDA);
// every function takes validated params whose pointers are on the device of q.
#pragma once
#include "common/attention_params.h"

namespace s2attn {
struct PagedParams;
}

namespace s2attn::cuda {

// Compute capability (major * 10 + minor) of `device`; throws DeviceError when there is no such device.
int compute_capability(int device);

// Portable path: mma.sync + cp.async, any sm_80+ GPU. Throws Unsupported for variants not built.
void forward_sm80(const AttentionParams& params);
void backward_sm80(const AttentionBwdParams& params);

#ifdef S2ATTN_WITH_SM90
// Hopper-native path (sm_90a: wgmma, TMA, warp specialisation); defined in src/cuda/sm90.
// forward_sm90_supports: whether a kernel variant for these params is built (dtype, head dim, block size,
// pattern kind); the dispatcher falls back to the portable path when it is not.
bool forward_sm90_supports(const AttentionParams& params);
void forward_sm90(const AttentionParams& params);
// backward_sm90_supports: whether the Hopper backward serves these params (bf16 / fp16, head dims 64 and 128,
// block 64 or 128, analytic patterns, TMA-aligned operands); the dispatcher falls back to the portable
// backward otherwise.
bool backward_sm90_supports(const AttentionBwdParams& params);
void backward_sm90(const AttentionBwdParams& params);
// Chunked prefill over a paged K/V cache through the Hopper forward (forward_sm90.h, PagedKvSm90): whether it
// serves the call (bf16 / fp16, D 64 / 128, block 64 / 128, analytic pattern, power-of-two pages of >= 64
// tokens, TMA-aligned operands, one split), and the call. The paged dispatcher (paged_launch.cu) takes it
// on compute capability 9.0 (S2ATTN_PAGED_PREFILL_SM90=0: never).
bool paged_prefill_sm90_supports(const PagedParams& params);
void paged_prefill_sm90(const PagedParams& params);
#endif

}  // namespace s2attn::cuda
