// The paged-KV front doors: validate, choose the backend from the tensors' device, decide the split count
// (CUDA; from shapes only), check the caller's workspace, dispatch. Also the combine front door.
#include <algorithm>
#include <cstdint>
#include <string>

#include "api/validate_paged.h"
#include "inference/paged_cpu.h"
#include "inference/paged_workspace.h"
#include "s2attn/paged.h"
#ifdef S2ATTN_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif
#ifdef S2ATTN_WITH_PAGED_CUDA
#include "inference/cuda/paged_cuda.h"
#endif

namespace s2attn {
namespace {

// true: the CUDA paged kernels serve these tensors; false: the CPU backend.
bool use_cuda(const Device& device, Backend requested) {
  if (device.type == DeviceType::cpu) {
    if (requested != Backend::automatic && requested != Backend::cpu) {
      throw InvalidArgument("backend", "the CPU backend (or automatic) for CPU tensors");
    }
    return false;
  }
  if (requested == Backend::cpu) throw InvalidArgument("backend", "a CUDA backend (or automatic) for CUDA tensors");
#ifdef S2ATTN_WITH_CUDA
  if (cuda::compute_capability(device.index) < 80) {
    throw Unsupported("s2attn's CUDA backends need compute capability 8.0 or newer");
  }
#endif
#ifndef S2ATTN_WITH_PAGED_CUDA
  throw Unsupported("s2attn was built without the CUDA paged-KV kernels; CUDA tensors cannot be processed");
#else
  return true;  // one portable kernel family serves sm_80 and sm_90 (cuda_sm80 / cuda_sm90 both map here)
#endif
}

int split_count(const PagedParams& p, const PagedOptions& o, bool cuda) {
  if (!cuda) return 1;
#ifdef S2ATTN_WITH_PAGED_CUDA
  if (o.num_splits > 0) return std::min(o.num_splits, kMaxPagedSplits);
  return cuda::paged_auto_splits(p);
#else
  (void)p, (void)o;
  return 1;
#endif
}

}  // namespace

void paged_attention(const Pattern& pattern, const TensorView& q, const PagedKV& kv, const TensorView& out,
                     const TensorView& lse, const PagedOptions& options) {
  PagedParams p = make_paged_params(pattern, q, kv, out, lse, options, true);
  const bool cuda = use_cuda(q.device, options.backend);
  if (!cuda) {
    cpu::paged_forward(p);
    return;
  }
#ifdef S2ATTN_WITH_PAGED_CUDA
  p.num_splits = split_count(p, options, true);
  const size_t need = PagedWorkspace::bytes(p.num_splits, p.total_q, p.num_heads, p.head_dim);
  if (need > 0) {
    const TensorView& w = options.workspace;
    if (!w.defined() || w.data == nullptr) {
      throw InvalidArgument("workspace", "a device buffer of paged_workspace_size(...) = " + std::to_string(need) +
                                             " bytes (split-KV with " + std::to_string(p.num_splits) +
                                             " splits; or num_splits=1)");
    }
    if (w.device != q.device) throw InvalidArgument("workspace", "on the same device as q");
    const size_t have = size_t(w.numel()) * size_t(dtype_size(w.dtype));
    if (have < need) {
      throw InvalidArgument("workspace", "at least " + std::to_string(need) + " bytes, got " + std::to_string(have));
    }
    if (reinterpret_cast<uintptr_t>(w.data) % 16 != 0) throw InvalidArgument("workspace", "16-byte aligned");
    p.workspace = w.data;
  }
  cuda::paged_forward(p);
#endif
}

int paged_num_splits(const Pattern& pattern, const TensorView& q, const PagedKV& kv, const PagedOptions& options) {
  const PagedParams p = make_paged_params(pattern, q, kv, TensorView{}, TensorView{}, options, false);
  return split_count(p, options, use_cuda(q.device, options.backend));
}

size_t paged_workspace_size(const Pattern& pattern, const TensorView& q, const PagedKV& kv,
                            const PagedOptions& options) {
  const PagedParams p = make_paged_params(pattern, q, kv, TensorView{}, TensorView{}, options, false);
  const int splits = split_count(p, options, use_cuda(q.device, options.backend));
  return PagedWorkspace::bytes(splits, p.total_q, p.num_heads, p.head_dim);
}

void combine_partitions(const std::vector<TensorView>& outs, const std::vector<TensorView>& lses,
                        const TensorView& out, const TensorView& lse, const CombineOptions& options) {
  const CombineParams p = make_combine_params(outs, lses, out, lse, options);
  if (use_cuda(out.device, Backend::automatic)) {
#ifdef S2ATTN_WITH_PAGED_CUDA
    cuda::combine_partitions(p);
#endif
    return;
  }
  cpu::combine_partitions(p);
}

}  // namespace s2attn
