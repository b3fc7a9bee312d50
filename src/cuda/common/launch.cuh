// One kernel launch as every launcher of the library does it: the dynamic shared-memory opt-in (needed above
// the 48 KiB default) set once per device, the grid checked against CUDA's limits, the launch error checked.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <utility>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "s2attn/errors.h"

namespace s2attn::cuda {

// The x extent of a grid of `ctas` CTAs; Unsupported (naming `what`) past CUDA's 2^31 - 1.
inline unsigned grid_extent(int64_t ctas, const char* what) {
  if (ctas > 0x7fffffff) {
    throw Unsupported(std::string(what) + ": the grid would exceed 2^31 - 1 CTAs for these shapes");
  }
  return static_cast<unsigned>(ctas);
}

// kernel<<<grid, threads, smem, stream>>>(args...) on `device`; `configured` is the caller's per-kernel set
// of devices whose opt-in is done (a static in its template).
template <class... KernelArgs, class... Args>
void launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, int threads, int smem, cudaStream_t stream, int device,
                   uint64_t* configured, Args&&... args) {
  if (smem > 48 * 1024) set_dynamic_smem_once(reinterpret_cast<const void*>(kernel), smem, device, configured);
  kernel<<<grid, threads, smem, stream>>>(std::forward<Args>(args)...);
  S2_CUDA_CHECK(cudaGetLastError());
}

// As launch_kernel, with programmatic dependent launch: the kernel's CTAs may start while the stream's
// previous kernel is still running, as soon as every CTA of that kernel has executed
// griddepcontrol.launch_dependents (or exited). For a kernel that reads nothing the previous one writes; it
// must execute griddepcontrol.wait before it exits, so that its completion still implies the previous one's
// (the work after it in the stream relies on that). Where the binary that runs has no griddepcontrol (built
// for an architecture before sm_90, or JIT-compiled from such PTX on a newer GPU) it is a plain launch: the
// kernel's wait would be missing, and nothing would order its reads after the previous kernel's writes.
template <class... KernelArgs, class... Args>
void launch_kernel_overlapping(void (*kernel)(KernelArgs...), dim3 grid, int threads, int smem, cudaStream_t stream,
                               int device, uint64_t* configured, Args&&... args) {
  if (!kernel_has_grid_dependency_control(reinterpret_cast<const void*>(kernel), device)) {
    return launch_kernel(kernel, grid, threads, smem, stream, device, configured, std::forward<Args>(args)...);
  }
  if (smem > 48 * 1024) set_dynamic_smem_once(reinterpret_cast<const void*>(kernel), smem, device, configured);
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(static_cast<unsigned>(threads));
  config.dynamicSmemBytes = static_cast<size_t>(smem);
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  S2_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace s2attn::cuda
