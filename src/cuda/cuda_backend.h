// The CUDA backends as the front door sees them. Compiled only when CMake finds nvcc (S2ATTN_WITH_CUDA);
// every function takes validated params whose pointers are on the device of q.
#pragma once
#include "common/attention_params.h"

namespace s2attn::cuda {

// Compute capability (major * 10 + minor) of `device`; throws DeviceError when there is no such device.
int compute_capability(int device);

// Portable path: mma.sync + cp.async, any sm_80+ GPU. Throws Unsupported for variants not built.
void forward_sm80(const AttentionParams& params);
void backward_sm80(const AttentionBwdParams& params);

}  // namespace s2attn::cuda
