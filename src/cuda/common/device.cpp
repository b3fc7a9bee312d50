#include "cuda/common/device.h"

#include <array>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "cuda/common/cuda_check.h"
#include "s2attn/errors.h"

namespace s2attn::cuda {
namespace {

constexpr int kMaxDevices = 64;

}  // namespace

int compute_capability(int device) {
  static std::array<std::atomic<int>, kMaxDevices> cache{};  // 0: not queried yet
  if (device >= 0 && device < kMaxDevices) {
    const int cc = cache[device].load(std::memory_order_relaxed);
    if (cc != 0) return cc;
  }
  int count = 0;
  S2_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (device < 0 || device >= count) {
    throw DeviceError("no CUDA device " + std::to_string(device) + " (this process sees " +
                      std::to_string(count) + ")");
  }
  int major = 0, minor = 0;
  S2_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  S2_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  const int cc = major * 10 + minor;
  if (device < kMaxDevices) cache[device].store(cc, std::memory_order_relaxed);
  return cc;
}

namespace {
// cudaDeviceGetAttribute(attr, device), queried once per (device, attribute) and cached.
int cached_device_attribute(int device, cudaDeviceAttr attr) {
  static std::mutex mutex;
  static std::map<std::pair<int, int>, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(device, static_cast<int>(attr));
  const auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  S2_CUDA_CHECK(cudaDeviceGetAttribute(&n, attr, device));
  return cache[key] = n;
}
}  // namespace

int sm_count(int device) { return cached_device_attribute(device, cudaDevAttrMultiProcessorCount); }

int max_dynamic_smem_per_block(int device) {
  static const int test_cap = [] {
    const char* v = std::getenv("S2ATTN_TEST_MAX_SMEM_PER_BLOCK");
    return v != nullptr ? std::atoi(v) : 0;
  }();
  const int n = cached_device_attribute(device, cudaDevAttrMaxSharedMemoryPerBlockOptin);
  return test_cap > 0 && test_cap < n ? test_cap : n;
}

int device_of(const void* ptr, const char* name) {
  cudaPointerAttributes attr{};
  S2_CUDA_CHECK(cudaPointerGetAttributes(&attr, ptr));
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    throw InvalidArgument(name, "CUDA device memory for the CUDA backend");
  }
  return attr.device;
}

DeviceGuard::DeviceGuard(int device) {
  int current = 0;
  S2_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device) {
    S2_CUDA_CHECK(cudaSetDevice(device));
    previous_ = current;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);  // a destructor must not throw; nothing to do on failure
}

void set_dynamic_smem_once(const void* kernel, int bytes, int device, uint64_t* done) {
  static std::mutex mutex;
  const uint64_t bit = device < 64 ? uint64_t(1) << device : 0;
  std::lock_guard<std::mutex> lock(mutex);
  if (bit != 0 && (*done & bit)) return;
  S2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  *done |= bit;
}

namespace {
// query(kernel) with `device` current, once per (kernel, device); one cache and lock per kind of query.
template <class Query>
int once_per_kernel(const void* kernel, int device, Query&& query) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(kernel, device);
  const auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  DeviceGuard guard(device);
  return cache[key] = query(kernel);
}
}  // namespace

bool kernel_has_grid_dependency_control(const void* kernel, int device) {
  return once_per_kernel(kernel, device, [](const void* k) {
           cudaFuncAttributes attr{};
           S2_CUDA_CHECK(cudaFuncGetAttributes(&attr, k));
           return attr.ptxVersion >= 90 ? 1 : 0;
         }) != 0;
}

int resident_ctas_per_sm(const void* kernel, int threads, int smem, int device) {
  return once_per_kernel(kernel, device, [&](const void* k) {
    int n = 0;
    S2_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, threads, static_cast<size_t>(smem)));
    return n;
  });
}

void* upload_blocking(int device, const void* host, size_t bytes) {
  DeviceGuard guard(device);
  void* ptr = nullptr;
  S2_CUDA_CHECK(cudaMalloc(&ptr, bytes > 0 ? bytes : 16));
  cudaStream_t stream = nullptr;
  cudaError_t err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (err == cudaSuccess) {
    if (bytes > 0) err = cudaMemcpyAsync(ptr, host, bytes, cudaMemcpyHostToDevice, stream);
    const cudaError_t sync = cudaStreamSynchronize(stream);  // `host` may be freed after this returns
    if (err == cudaSuccess) err = sync;
    cudaStreamDestroy(stream);
  }
  if (err != cudaSuccess) {
    cudaFree(ptr);
    throw_cuda_error(err, "upload_blocking", __FILE__, __LINE__);
  }
  return ptr;
}

void free_device_buffer(int device, void* ptr) noexcept {
  if (ptr == nullptr) return;
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) return;  // the runtime is gone (process exit): nothing to free
  if (current != device && cudaSetDevice(device) != cudaSuccess) return;
  cudaFree(ptr);
  if (current != device) cudaSetDevice(current);
}

bool stream_is_capturing(int device, void* stream) {
  DeviceGuard guard(device);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  S2_CUDA_CHECK(cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &status));
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace s2attn::cuda
