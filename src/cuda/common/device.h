// Host-side device queries shared by the CUDA backends: compute capability (cached), the device that owns
// a pointer, a scoped current-device switch, and the one-time opt-in to large dynamic shared memory.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace s2attn::cuda {

// Compute capability (major * 10 + minor) of `device`, queried once per device and cached.
// (Declared in cuda_backend.h too; defined in device.cpp.)
int compute_capability(int device);

// The device whose memory `ptr` points to (device memory or managed memory); throws InvalidArgument
// naming `name` for host memory.
int device_of(const void* ptr, const char* name);

// Makes `device` current for the lifetime of the guard (no-op when it already is), then restores.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// Streaming multiprocessors of `device`, cached.
int sm_count(int device);

// The most dynamic shared memory one CTA may opt in to on `device` (cudaDevAttrMaxSharedMemoryPerBlockOptin:
// 227 KiB on sm_90, 163 KiB on sm_80, 99 KiB on sm_86 / sm_89), cached per device. Kernels too large for it
// have leaner variants (fewer stages or rows) that the dispatchers take instead. The environment variable
// S2ATTN_TEST_MAX_SMEM_PER_BLOCK lowers it (read once per process), so that a test on an H100 runs the
// paths of a smaller GPU.
int max_dynamic_smem_per_block(int device);

// Sets cudaFuncAttributeMaxDynamicSharedMemorySize of `kernel` to `bytes` once per device. `done` is a
// per-kernel bit set of the devices already configured (a static in the caller's template).
void set_dynamic_smem_once(const void* kernel, int bytes, int device, uint64_t* done);

// Whether the binary of `kernel` that runs on `device` was compiled from PTX of sm_90 or later, so that its
// griddepcontrol instructions exist (a build's compute_80 PTX, JIT-compiled on a newer GPU, has none).
// Queried once per (kernel, device) and cached.
bool kernel_has_grid_dependency_control(const void* kernel, int device);

// CTAs of `kernel` (launched with `threads` threads and `smem` bytes of dynamic shared memory) that one SM of
// `device` holds at once, from the occupancy calculator; above 48 KiB the caller has made the kernel's
// shared-memory opt-in (set_dynamic_smem_once), else it counts 0. Queried once per (kernel, device) and
// cached: each kernel has one launch shape.
int resident_ctas_per_sm(const void* kernel, int threads, int smem, int device);

// A new device buffer on `device` holding `bytes` copied from host memory, complete when this returns
// (allocation, copy on a private stream, synchronisation of that stream only). A plan step: never call it
// from an op's path on a warm cache.
void* upload_blocking(int device, const void* host, size_t bytes);
// Frees a buffer of upload_blocking; errors (a runtime already torn down at exit) are ignored.
void free_device_buffer(int device, void* ptr) noexcept;
// Whether `stream` (null: the legacy default stream) is capturing a CUDA graph on `device`.
bool stream_is_capturing(int device, void* stream);

}  // namespace s2attn::cuda
