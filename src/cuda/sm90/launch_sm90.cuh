// One launch of a persistent Hopper kernel (forward, backward KV, backward dQ): its shared storage plus the
// alignment slack as dynamic shared memory (checked against an sm_90 CTA's 227 KiB at compile time), the
// persistent grid of `launch`.
#pragma once
#include <cstdint>

#include "cuda/common/launch.cuh"
#include "cuda/sm90/ptx_sm90.cuh"

namespace s2attn::cuda {

// overlapping: launch_kernel_overlapping (the kernel may start during the stream's previous kernel).
template <auto Kernel, class Storage, class Params, class Launch>
void launch_persistent_sm90(int threads, const Params& params, const Launch& launch, bool overlapping = false) {
  constexpr int kSmem = shared_storage_bytes_sm90<Storage>();
  static_assert(kSmem <= 227 * 1024, "shared memory of one sm_90 CTA: 227 KiB");
  static uint64_t configured = 0;  // devices on which this kernel's opt-in is done
  if (overlapping) {
    launch_kernel_overlapping(Kernel, dim3(launch.grid), threads, kSmem, launch.stream, launch.device, &configured,
                              params);
  } else {
    launch_kernel(Kernel, launch.grid, threads, kSmem, launch.stream, launch.device, &configured, params);
  }
}

}  // namespace s2attn::cuda
