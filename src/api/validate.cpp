#include "api/validate.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "api/checks.h"

namespace s2attn {
namespace {

using namespace checks;

// An operand in [B, S, H, D] (or varlen [T, H, D]) layout; returns its strides.
SeqStrides operand(const char* name, const TensorView& t, DType dtype, const TensorView& q, bool varlen,
                   std::initializer_list<int64_t> shape) {
  require_defined(name, t);
  require_device(name, t, q.device);
  if (!is_float_io(t.dtype) || t.dtype != dtype) {
    throw DTypeMismatch(name, std::string("dtype ") + dtype_name(dtype) + " (float32, float16 or "
                              "bfloat16, the same as q), got " + dtype_name(t.dtype));
  }
  require_shape(name, t, shape);
  require_last_contiguous(name, t);
  SeqStrides s;
  if (varlen) {
    s.batch = 0;
    s.seq = t.stride[0];
    s.head = t.stride[1];
  } else {
    s.batch = t.stride[0];
    s.seq = t.stride[1];
    s.head = t.stride[2];
  }
  return s;
}

const int32_t* cu_seqlens(const char* name, const TensorView& t, const TensorView& q, int64_t batch,
                          int64_t total) {
  require_defined(name, t);
  require_device(name, t, q.device);
  if (t.dtype != DType::i32) {
    throw DTypeMismatch(name, std::string("dtype int32, got ") + dtype_name(t.dtype));
  }
  if (t.ndim != 1 || t.shape[0] != batch + 1) {
    throw InvalidArgument(name, "shape [" + std::to_string(batch + 1) + "] (batch + 1), got " + shape_str(t));
  }
  if (t.shape[0] > 1 && t.stride[0] != 1) throw InvalidArgument(name, "contiguous");
  const auto* cu = static_cast<const int32_t*>(t.data);
  if (t.device.type == DeviceType::cpu) {  // device values are not read here: that would synchronise
    if (cu[0] < 0) throw InvalidArgument(name, "cu_seqlens[0] >= 0, got " + std::to_string(cu[0]));
    for (int64_t b = 0; b < batch; ++b) {
      if (cu[b + 1] < cu[b]) {
        throw InvalidArgument(name, "non-decreasing offsets, got " + std::to_string(cu[b]) + " then " +
                                        std::to_string(cu[b + 1]) + " at index " + std::to_string(b));
      }
    }
    if (cu[batch] > total) {
      throw InvalidArgument(name, "offsets within the " + std::to_string(total) + " tokens, got " +
                                      std::to_string(cu[batch]));
    }
  }
  return cu;
}

// The caller's workspace for the CUDA backward, if any: uint8, contiguous, 16-byte aligned, large enough.
void workspace(AttentionBwdParams& p, const AttentionOptions& o, const TensorView& q) {
  const TensorView& w = o.workspace;
  if (q.device.type != DeviceType::cuda || !w.defined()) return;  // CPU: no scratch on the device
  require_device("workspace", w, q.device);
  if (w.dtype != DType::u8) {
    throw DTypeMismatch("workspace", std::string("dtype uint8, got ") + dtype_name(w.dtype));
  }
  int64_t expect = 1;
  for (int i = w.ndim - 1; i >= 0; --i) {
    if (w.shape[i] > 1 && w.stride[i] != expect) throw InvalidArgument("workspace", "a contiguous tensor");
    expect *= w.shape[i];
  }
  if ((reinterpret_cast<uintptr_t>(w.data) & 15) != 0) {
    throw InvalidArgument("workspace", "a 16-byte aligned data pointer");
  }
  const uint64_t need = BackwardWorkspace(p.num_heads, p.total_q, p.head_dim, p.batch, p.deterministic).bytes();
  if (static_cast<uint64_t>(w.numel()) < need) {
    throw InvalidArgument("workspace", "at least " + std::to_string(need) +
                                           " bytes (backward_workspace_size), got " + std::to_string(w.numel()));
  }
  p.workspace = w.data;
  p.workspace_bytes = static_cast<uint64_t>(w.numel());
}

}  // namespace

AttentionParams make_forward_params(const Pattern& pattern, const TensorView& q, const TensorView& k,
                                    const TensorView& v, const TensorView& out, const TensorView& lse,
                                    const AttentionOptions& o) {
  require_defined("q", q);
  const bool varlen = o.cu_seqlens_q.defined() || o.cu_seqlens_k.defined();
  if (varlen && !(o.cu_seqlens_q.defined() && o.cu_seqlens_k.defined())) {
    throw InvalidArgument(o.cu_seqlens_q.defined() ? "cu_seqlens_k" : "cu_seqlens_q",
                          "given together with the other cu_seqlens (varlen needs both)");
  }
  const int want_rank = varlen ? 3 : 4;
  if (q.ndim != want_rank) {
    throw InvalidArgument("q", varlen ? "rank 3 [total_q, heads, head_dim] with cu_seqlens, got " + shape_str(q)
                                      : "rank 4 [batch, seqlen_q, heads, head_dim], got " + shape_str(q));
  }
  if (!is_float_io(q.dtype)) {
    throw DTypeMismatch("q", std::string("dtype float32, float16 or bfloat16, got ") + dtype_name(q.dtype));
  }
  if (k.ndim != want_rank) {
    throw InvalidArgument("k", "rank " + std::to_string(want_rank) + " like q, got " + shape_str(k));
  }
  const int64_t H = q.shape[want_rank - 2], D = q.shape[want_rank - 1];
  const int64_t Hkv = k.shape[want_rank - 2];
  if (H < 1 || D < 1) throw InvalidArgument("q", "at least one head and head_dim >= 1, got " + shape_str(q));
  if (D > 256) throw InvalidArgument("q", "head_dim <= 256, got " + std::to_string(D));
  if (Hkv < 1 || H % Hkv != 0) {
    throw InvalidArgument("k", "a number of heads that divides q's " + std::to_string(H) + ", got " +
                                   std::to_string(Hkv));
  }

  AttentionParams p;
  p.dtype = q.dtype;
  p.num_heads = static_cast<int32_t>(H);
  p.num_kv_heads = static_cast<int32_t>(Hkv);
  p.head_dim = static_cast<int32_t>(D);
  int64_t B, Sq, Sk;
  if (varlen) {
    B = o.cu_seqlens_q.shape[0] - 1;
    if (o.cu_seqlens_q.ndim != 1 || B < 1) {
      throw InvalidArgument("cu_seqlens_q", "shape [batch + 1] with batch >= 1, got " + shape_str(o.cu_seqlens_q));
    }
    const int64_t Tq = q.shape[0], Tk = k.shape[0];
    p.cu_seqlens_q = cu_seqlens("cu_seqlens_q", o.cu_seqlens_q, q, B, Tq);
    p.cu_seqlens_k = cu_seqlens("cu_seqlens_k", o.cu_seqlens_k, q, B, Tk);
    p.q_stride = operand("q", q, q.dtype, q, true, {Tq, H, D});
    p.k_stride = operand("k", k, q.dtype, q, true, {Tk, Hkv, D});
    p.v_stride = operand("v", v, q.dtype, q, true, {Tk, Hkv, D});
    p.out_stride = operand("out", out, q.dtype, q, true, {Tq, H, D});
    Sq = Sk = 0;
    if (q.device.type == DeviceType::cpu) {
      for (int64_t b = 0; b < B; ++b) {
        Sq = std::max<int64_t>(Sq, p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b]);
        Sk = std::max<int64_t>(Sk, p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b]);
      }
    } else {
      Sq = Tq;  // an upper bound; the kernels read the true lengths on the device
      Sk = Tk;
    }
    if (lse.defined()) {
      if (lse.dtype != DType::f32) throw DTypeMismatch("lse", std::string("dtype float32, got ") + dtype_name(lse.dtype));
      require_defined("lse", lse);  // non-negative strides: the kernels write through them
      require_device("lse", lse, q.device);
      require_shape("lse", lse, {H, Tq});
      p.lse_stride = SeqStrides{0, lse.stride[1], lse.stride[0]};
    }
  } else {
    B = q.shape[0];
    Sq = q.shape[1];
    Sk = k.shape[1];
    p.q_stride = operand("q", q, q.dtype, q, false, {B, Sq, H, D});
    p.k_stride = operand("k", k, q.dtype, q, false, {B, Sk, Hkv, D});
    p.v_stride = operand("v", v, q.dtype, q, false, {B, Sk, Hkv, D});
    p.out_stride = operand("out", out, q.dtype, q, false, {B, Sq, H, D});
    if (lse.defined()) {
      if (lse.dtype != DType::f32) throw DTypeMismatch("lse", std::string("dtype float32, got ") + dtype_name(lse.dtype));
      require_defined("lse", lse);
      require_device("lse", lse, q.device);
      require_shape("lse", lse, {B, H, Sq});
      p.lse_stride = SeqStrides{lse.stride[0], lse.stride[2], lse.stride[1]};
    }
  }
  if (B < 1) throw InvalidArgument("q", "batch >= 1");
  if (Sq > (int64_t(1) << 30) || Sk > (int64_t(1) << 30)) {
    throw InvalidArgument("q", "sequence lengths below 2^30");
  }
  p.batch = static_cast<int32_t>(B);
  p.seqlen_q = static_cast<int32_t>(Sq);
  p.seqlen_k = static_cast<int32_t>(Sk);
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.lse = lse.defined() ? static_cast<float*>(lse.data) : nullptr;

  // The pattern must describe these heads and cover these blocks.
  const PatternRules& r = pattern.rules();
  if (r.num_heads != H) {
    throw InvalidArgument("pattern", "defined for " + std::to_string(r.num_heads) +
                                         " query heads, q has " + std::to_string(H));
  }
  if (r.num_kv_heads != Hkv) {
    throw InvalidArgument("pattern", "defined for " + std::to_string(r.num_kv_heads) +
                                         " KV heads, k has " + std::to_string(Hkv));
  }
  if (o.q_offset && *o.q_offset < 0) {
    throw InvalidArgument("q_offset", ">= 0, got " + std::to_string(*o.q_offset));
  }
  // query positions are 32-bit in the kernels (seq_geometry.cuh), as the lengths are
  if (o.q_offset && *o.q_offset > (int64_t(1) << 30) - Sq) {
    throw InvalidArgument("q_offset", "q_offset + seqlen_q <= 2^30, got " + std::to_string(*o.q_offset) + " + " +
                                          std::to_string(Sq));
  }
  p.q_offset = o.q_offset.value_or(-1);
  if (r.use_mask) {
    const int64_t bs = r.block_size;
    const int64_t last_pos = std::max<int64_t>(Sk, p.q_offset >= 0 ? p.q_offset + Sq : Sq);
    const int64_t need_rows = (last_pos + bs - 1) / bs, need_cols = (Sk + bs - 1) / bs;
    if (r.mask.rows < need_rows || r.mask.cols < need_cols) {
      throw InvalidArgument("pattern.mask", "at least [" + std::to_string(need_rows) + ", " +
                                                std::to_string(need_cols) + "] blocks for these lengths, got [" +
                                                std::to_string(r.mask.rows) + ", " +
                                                std::to_string(r.mask.cols) + "]");
    }
  }
  p.pattern = r;

  const float scale = o.softmax_scale.value_or(1.f / std::sqrt(static_cast<float>(D)));
  if (!std::isfinite(scale)) throw InvalidArgument("softmax_scale", "a finite number");
  p.scale = scale;
  if (o.num_threads < 0) throw InvalidArgument("num_threads", ">= 0 (0 = all hardware threads)");
  p.num_threads = o.num_threads;
  p.stream = o.stream;
  p.deterministic = o.deterministic;
  // Block masks: the lists on the tensors' device (CUDA: the pattern's cached copy, uploaded once when
  // cold; see Pattern::prepare). Last, so that an invalid call never allocates.
  if (r.use_mask && q.device.type == DeviceType::cuda) p.pattern.mask = pattern.mask_view(q.device, o.stream);
  return p;
}

AttentionBwdParams make_backward_params(const Pattern& pattern, const TensorView& q, const TensorView& k,
                                        const TensorView& v, const TensorView& out, const TensorView& lse,
                                        const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                        const TensorView& dv, const AttentionOptions& o) {
  if (!lse.defined()) throw InvalidArgument("lse", "the log-sum-exp the forward returned (got none)");
  AttentionBwdParams p;
  static_cast<AttentionParams&>(p) = make_forward_params(pattern, q, k, v, out, lse, o);
  const bool varlen = p.cu_seqlens_q != nullptr;
  if (varlen) {
    const int64_t Tq = q.shape[0], Tk = k.shape[0], H = q.shape[1], Hkv = k.shape[1], D = q.shape[2];
    p.dout_stride = operand("dout", dout, q.dtype, q, true, {Tq, H, D});
    p.dq_stride = operand("dq", dq, q.dtype, q, true, {Tq, H, D});
    p.dk_stride = operand("dk", dk, q.dtype, q, true, {Tk, Hkv, D});
    p.dv_stride = operand("dv", dv, q.dtype, q, true, {Tk, Hkv, D});
  } else {
    const int64_t B = q.shape[0], Sq = q.shape[1], Sk = k.shape[1], H = q.shape[2], Hkv = k.shape[2],
                  D = q.shape[3];
    p.dout_stride = operand("dout", dout, q.dtype, q, false, {B, Sq, H, D});
    p.dq_stride = operand("dq", dq, q.dtype, q, false, {B, Sq, H, D});
    p.dk_stride = operand("dk", dk, q.dtype, q, false, {B, Sk, Hkv, D});
    p.dv_stride = operand("dv", dv, q.dtype, q, false, {B, Sk, Hkv, D});
  }
  p.dout = dout.data;
  p.dq = dq.data;
  p.dk = dk.data;
  p.dv = dv.data;
  p.total_q = varlen ? q.shape[0] : q.shape[0] * q.shape[1];
  workspace(p, o, q);
  return p;
}

size_t backward_workspace_size(const Pattern& pattern, const TensorView& q, const TensorView& k,
                               const TensorView& v, const AttentionOptions& options) {
  // the forward's checks (q stands in for out: same shape and dtype) give the shapes and a named error
  const AttentionParams p = make_forward_params(pattern, q, k, v, q, TensorView{}, options);
  if (q.device.type != DeviceType::cuda) return 0;
  const int64_t rows = p.cu_seqlens_q ? q.shape[0] : q.shape[0] * q.shape[1];
  return static_cast<size_t>(BackwardWorkspace(p.num_heads, rows, p.head_dim, p.batch, options.deterministic).bytes());
}

}  // namespace s2attn
