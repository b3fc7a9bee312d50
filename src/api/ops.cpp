// The front doors: validate, then dispatch on the tensors' device (and, on CUDA, the GPU's capability).
#include "s2attn/ops.h"

#include "api/validate.h"
#include "cpu/cpu_backend.h"
#ifdef S2ATTN_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace s2attn {
namespace {

// The backend that serves tensors on `device`, honouring an explicit request.
Backend choose_backend(const Device& device, Backend requested) {
  if (device.type == DeviceType::cpu) {
    if (requested != Backend::automatic && requested != Backend::cpu) {
      throw InvalidArgument("backend", "the CPU backend (or automatic) for CPU tensors");
    }
    return Backend::cpu;
  }
#ifdef S2ATTN_WITH_CUDA
  if (requested == Backend::cpu) throw InvalidArgument("backend", "a CUDA backend (or automatic) for CUDA tensors");
  if (cuda::compute_capability(device.index) < 80) {
    throw Unsupported("s2attn's CUDA backends need compute capability 8.0 or newer");
  }
  if (requested == Backend::cuda_sm90) {
#ifdef S2ATTN_WITH_SM90
    if (cuda::compute_capability(device.index) != 90) {
      throw InvalidArgument("backend", "cuda_sm90 only on a compute capability 9.0 GPU (H100/H200)");
    }
    return Backend::cuda_sm90;
#else
    throw Unsupported("s2attn was built without the Hopper (sm_90a) path");
#endif
  }
  if (requested == Backend::cuda_sm80) return Backend::cuda_sm80;
  // automatic: the Hopper path on sm_90 (per call, where it has a variant), else the portable one
  return cuda::compute_capability(device.index) == 90 ? Backend::cuda_sm90 : Backend::cuda_sm80;
#else
  (void)requested;
  throw Unsupported("s2attn was built without a CUDA backend; CUDA tensors cannot be processed");
#endif
}

}  // namespace

void forward(const Pattern& pattern, const TensorView& q, const TensorView& k, const TensorView& v,
             const TensorView& out, const TensorView& lse, const AttentionOptions& options) {
  const AttentionParams params = make_forward_params(pattern, q, k, v, out, lse, options);
  switch (choose_backend(q.device, options.backend)) {
#ifdef S2ATTN_WITH_CUDA
#ifdef S2ATTN_WITH_SM90
    case Backend::cuda_sm90:
      if (cuda::forward_sm90_supports(params)) {
        cuda::forward_sm90(params);
        return;
      }
      if (options.backend == Backend::cuda_sm90) {
        throw Unsupported("the Hopper path has no forward kernel for this dtype / head dim / block size / pattern");
      }
      cuda::forward_sm80(params);
      return;
#else
    case Backend::cuda_sm90: cuda::forward_sm80(params); return;
#endif
    case Backend::cuda_sm80: cuda::forward_sm80(params); return;
#endif
    default: cpu::forward(params); return;
  }
}

void backward(const Pattern& pattern, const TensorView& q, const TensorView& k, const TensorView& v,
              const TensorView& out, const TensorView& lse, const TensorView& dout, const TensorView& dq,
              const TensorView& dk, const TensorView& dv, const AttentionOptions& options) {
  const AttentionBwdParams params =
      make_backward_params(pattern, q, k, v, out, lse, dout, dq, dk, dv, options);
  switch (choose_backend(q.device, options.backend)) {
#ifdef S2ATTN_WITH_CUDA
#ifdef S2ATTN_WITH_SM90
    // Auto and forced alike: the Hopper backward where it has a kernel, else the portable one. (Unlike the
    // forward, a forced cuda_sm90 falls back: the Hopper backward serves fewer variants than its forward,
    // and a training step the forward accepted must not fail in its backward.)
    case Backend::cuda_sm90:
      if (cuda::backward_sm90_supports(params)) {
        cuda::backward_sm90(params);
        return;
      }
      cuda::backward_sm80(params);
      return;
#else
    case Backend::cuda_sm90:
#endif
    case Backend::cuda_sm80: cuda::backward_sm80(params); return;
#endif
    default: cpu::backward(params); return;
  }
}

bool backend_available(Backend backend) {
  switch (backend) {
    case Backend::automatic:
    case Backend::cpu: return true;
#ifdef S2ATTN_WITH_CUDA
    case Backend::cuda_sm80:
      try {
        return cuda::compute_capability(0) >= 80;
      } catch (const Error&) {
        return false;
      }
#ifdef S2ATTN_WITH_SM90
    case Backend::cuda_sm90:
      try {
        return cuda::compute_capability(0) == 90;
      } catch (const Error&) {
        return false;
      }
#endif
#endif
    default: return false;
  }
}

}  // namespace s2attn
