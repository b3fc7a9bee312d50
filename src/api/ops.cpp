// The front doors: validate, then dispatch on the tensors' device.
#include "s2attn/ops.h"

#include "api/validate.h"
#include "cpu/cpu_backend.h"

namespace s2attn {
namespace {

void require_backend(const TensorView& q, Backend requested) {
  if (q.device.type == DeviceType::cpu) {
    if (requested != Backend::automatic && requested != Backend::cpu) {
      throw InvalidArgument("backend", "the CPU backend (or automatic) for CPU tensors");
    }
    return;
  }
  // NOTE: the CUDA backends arrive with the portable and Hopper paths; until then CUDA tensors are refused.
  throw Unsupported("s2attn was built without a CUDA backend; CUDA tensors cannot be processed");
}

}  // namespace

void forward(const Pattern& pattern, const TensorView& q, const TensorView& k, const TensorView& v,
             const TensorView& out, const TensorView& lse, const AttentionOptions& options) {
  const AttentionParams params = make_forward_params(pattern, q, k, v, out, lse, options);
  require_backend(q, options.backend);
  cpu::forward(params);
}

void backward(const Pattern& pattern, const TensorView& q, const TensorView& k, const TensorView& v,
              const TensorView& out, const TensorView& lse, const TensorView& dout, const TensorView& dq,
              const TensorView& dk, const TensorView& dv, const AttentionOptions& options) {
  const AttentionBwdParams params =
      make_backward_params(pattern, q, k, v, out, lse, dout, dq, dk, dv, options);
  require_backend(q, options.backend);
  cpu::backward(params);
}

bool backend_available(Backend backend) {
  return backend == Backend::automatic || backend == Backend::cpu;
}

}  // namespace s2attn
