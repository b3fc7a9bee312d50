// Device scratch allocated and freed in the caller's stream order (cudaMallocAsync / cudaFreeAsync): the
// CUDA backwards' workspace when the caller passes none.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/common/cuda_check.h"

namespace s2attn::cuda {

// Device scratch allocated and freed in the caller's stream order (the free is enqueued behind the
// kernels, also when a later launch throws).
class StreamScratch {
 public:
  StreamScratch(uint64_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) S2_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
  }
  ~StreamScratch() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);  // a destructor must not throw
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace s2attn::cuda
