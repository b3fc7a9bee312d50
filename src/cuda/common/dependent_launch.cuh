// Programmatic dependent launch (launch_kernel_overlapping in launch.cuh): the instructions by which a
// kernel lets the stream's next kernel start early, and by which that kernel waits for its predecessors.
// No-ops before sm_90, where the launch attribute has no effect either.
#pragma once

namespace s2attn::cuda {

// This CTA lets the stream's next kernel start (its CTAs are scheduled once every CTA of this grid has
// called this or exited).
__device__ __forceinline__ void grid_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// This thread waits until the stream's previous kernels have completed and their writes are visible.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

}  // namespace s2attn::cuda
