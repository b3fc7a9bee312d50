// Error checking for CUDA runtime calls: every call goes through S2_CUDA_CHECK, which throws
// s2attn::DeviceError naming the call, the error and where it was made. Kernel launches are checked with
// S2_CUDA_CHECK(cudaGetLastError()) right after the launch (launch configuration errors surface there;
// faults inside a kernel surface at the caller's next synchronising call, as with any CUDA library).
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "s2attn/errors.h"

namespace s2attn::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw DeviceError(std::string("CUDA error in ") + call + ": " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line));
}

}  // namespace s2attn::cuda

#define S2_CUDA_CHECK(call)                                                 \
  do {                                                                      \
    const cudaError_t s2_err_ = (call);                                     \
    if (s2_err_ != cudaSuccess) {                                           \
      ::s2attn::cuda::throw_cuda_error(s2_err_, #call, __FILE__, __LINE__); \
    }                                                                       \
  } while (0)
