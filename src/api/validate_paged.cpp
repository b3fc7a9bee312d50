#include "api/validate_paged.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "api/checks.h"

namespace s2attn {
namespace {

using namespace checks;

// An int32 vector of n entries on `dev`, contiguous.
const int32_t* int_vector(const char* name, const TensorView& t, const Device& dev, int64_t n, const char* what) {
  require_defined(name, t);
  require_device(name, t, dev);
  require_dtype(name, t, DType::i32, "");
  if (t.ndim != 1 || t.shape[0] != n) {
    throw InvalidArgument(name, "shape [" + std::to_string(n) + "] (" + what + "), got " + shape_str(t));
  }
  if (n > 1 && t.stride[0] != 1) throw InvalidArgument(name, "contiguous");
  return static_cast<const int32_t*>(t.data);
}

// A q-like operand ([B, S, H, D] or varlen [T, H, D]) of q's dtype and device; returns its strides.
SeqStrides q_like(const char* name, const TensorView& t, const TensorView& q, bool varlen) {
  require_defined(name, t);
  require_device(name, t, q.device);
  if (t.dtype != q.dtype) {
    throw DTypeMismatch(name, std::string("dtype ") + dtype_name(q.dtype) + " (the same as q), got " +
                                  dtype_name(t.dtype));
  }
  if (varlen) {
    require_shape(name, t, {q.shape[0], q.shape[1], q.shape[2]});
  } else {
    require_shape(name, t, {q.shape[0], q.shape[1], q.shape[2], q.shape[3]});
  }
  require_last_contiguous(name, t);
  return varlen ? SeqStrides{0, t.stride[0], t.stride[1]} : SeqStrides{t.stride[0], t.stride[1], t.stride[2]};
}

void check_cpu_values(const PagedParams& p) {
  const int64_t capacity = int64_t(p.max_pages) * p.page_size;
  for (int32_t b = 0; b < p.batch; ++b) {
    const int32_t c = p.context_lens[b];
    if (c < 0 || c > capacity) {
      throw InvalidArgument("context_lens", "entries in [0, max_pages * page_size] = [0, " +
                                                std::to_string(capacity) + "], got " + std::to_string(c) +
                                                " for sequence " + std::to_string(b));
    }
  }
  if (p.cu_seqlens_q) {
    const int32_t* cu = p.cu_seqlens_q;
    if (cu[0] < 0) throw InvalidArgument("cu_seqlens_q", "cu_seqlens_q[0] >= 0, got " + std::to_string(cu[0]));
    for (int32_t b = 0; b < p.batch; ++b) {
      if (cu[b + 1] < cu[b]) {
        throw InvalidArgument("cu_seqlens_q", "non-decreasing offsets, got " + std::to_string(cu[b]) + " then " +
                                                  std::to_string(cu[b + 1]) + " at index " + std::to_string(b));
      }
    }
    if (cu[p.batch] > p.total_q) {
      throw InvalidArgument("cu_seqlens_q", "offsets within the " + std::to_string(p.total_q) +
                                                " query rows, got " + std::to_string(cu[p.batch]));
    }
  }
  if (p.pattern.use_mask) {  // the mask must cover every query and key block of these contexts
    int64_t max_ctx = 0;
    for (int32_t b = 0; b < p.batch; ++b) max_ctx = std::max<int64_t>(max_ctx, p.context_lens[b]);
    const int64_t need = (max_ctx + p.pattern.block_size - 1) / p.pattern.block_size;
    if (p.pattern.mask.rows < need || p.pattern.mask.cols < need) {
      throw InvalidArgument("pattern.mask", "at least [" + std::to_string(need) + ", " + std::to_string(need) +
                                                "] blocks for these context lengths, got [" +
                                                std::to_string(p.pattern.mask.rows) + ", " +
                                                std::to_string(p.pattern.mask.cols) + "]");
    }
  }
}

}  // namespace

PagedParams make_paged_params(const Pattern& pattern, const TensorView& q, const PagedKV& kv,
                              const TensorView& out, const TensorView& lse, const PagedOptions& o,
                              bool with_outputs) {
  require_defined("q", q);
  const bool varlen = o.cu_seqlens_q.defined();
  const int rank = varlen ? 3 : 4;
  if (q.ndim != rank) {
    throw InvalidArgument("q", varlen ? "rank 3 [total_q, heads, head_dim] with cu_seqlens_q, got " + shape_str(q)
                                      : "rank 4 [batch, q_len, heads, head_dim], got " + shape_str(q));
  }
  if (!is_float_io(q.dtype)) {
    throw DTypeMismatch("q", std::string("dtype float32, float16 or bfloat16, got ") + dtype_name(q.dtype));
  }
  require_last_contiguous("q", q);
  const Device dev = q.device;
  const int64_t H = q.shape[rank - 2], D = q.shape[rank - 1];
  if (H < 1 || D < 1) throw InvalidArgument("q", "at least one head and head_dim >= 1, got " + shape_str(q));
  if (D > 256) throw InvalidArgument("q", "head_dim <= 256, got " + std::to_string(D));

  PagedParams p;
  p.dtype = q.dtype;
  p.num_heads = static_cast<int32_t>(H);
  p.head_dim = static_cast<int32_t>(D);
  p.q = q.data;
  if (varlen) {
    p.q_stride = SeqStrides{0, q.stride[0], q.stride[1]};
    const int64_t B = o.cu_seqlens_q.ndim == 1 ? o.cu_seqlens_q.shape[0] - 1 : 0;
    if (B < 1) {
      throw InvalidArgument("cu_seqlens_q", "shape [batch + 1] with batch >= 1, got " + shape_str(o.cu_seqlens_q));
    }
    p.batch = static_cast<int32_t>(B);
    p.cu_seqlens_q = int_vector("cu_seqlens_q", o.cu_seqlens_q, dev, B + 1, "batch + 1");
    p.total_q = static_cast<int32_t>(q.shape[0]);
    p.q_len = p.total_q;  // an upper bound; the exact maximum below for CPU tensors
  } else {
    p.q_stride = SeqStrides{q.stride[0], q.stride[1], q.stride[2]};
    p.batch = static_cast<int32_t>(q.shape[0]);
    p.q_len = static_cast<int32_t>(q.shape[1]);
    if (p.batch < 1) throw InvalidArgument("q", "batch >= 1, got " + shape_str(q));
    p.total_q = static_cast<int32_t>(q.shape[0] * q.shape[1]);
  }
  if (q.shape[0] > (int64_t(1) << 30) || (!varlen && q.shape[0] * q.shape[1] > (int64_t(1) << 30))) {
    throw InvalidArgument("q", "fewer than 2^30 query rows");
  }

  // The cache.
  const TensorView& kp = kv.k_pages;
  const TensorView& vp = kv.v_pages;
  require_defined("k_pages", kp);
  require_device("k_pages", kp, dev);
  if (kp.dtype != q.dtype) {
    throw DTypeMismatch("k_pages", std::string("dtype ") + dtype_name(q.dtype) + " (the same as q), got " +
                                       dtype_name(kp.dtype));
  }
  if (kp.ndim != 4) {
    throw InvalidArgument("k_pages", "rank 4 [num_pages, page_size, kv_heads, head_dim], got " + shape_str(kp));
  }
  if (kp.shape[1] < 1 || kp.shape[1] > (1 << 20)) {
    throw InvalidArgument("k_pages", "a page size (dimension 1) in [1, 2^20], got " + shape_str(kp));
  }
  if (kp.shape[3] != D) {
    throw InvalidArgument("k_pages", "head_dim " + std::to_string(D) + " (as q), got " + shape_str(kp));
  }
  if (kp.shape[0] > INT32_MAX) throw InvalidArgument("k_pages", "fewer than 2^31 pages");
  require_last_contiguous("k_pages", kp);
  require_defined("v_pages", vp);
  require_device("v_pages", vp, dev);
  if (vp.dtype != q.dtype) {
    throw DTypeMismatch("v_pages", std::string("dtype ") + dtype_name(q.dtype) + " (the same as q), got " +
                                       dtype_name(vp.dtype));
  }
  require_shape("v_pages", vp, {kp.shape[0], kp.shape[1], kp.shape[2], kp.shape[3]});
  require_last_contiguous("v_pages", vp);

  const TensorView& bt = kv.block_table;
  require_defined("block_table", bt);
  require_device("block_table", bt, dev);
  require_dtype("block_table", bt, DType::i32, "");
  int64_t Hkv;
  if (bt.ndim == 2) {
    Hkv = kp.shape[2];
    require_shape("block_table", bt, {p.batch, bt.shape[1]});
    p.bt_batch_stride = bt.stride[0];
    p.bt_head_stride = 0;
    p.bt_page_stride = bt.stride[1];
  } else if (bt.ndim == 3) {  // head-paged
    Hkv = bt.shape[1];
    if (kp.shape[2] != 1) {
      throw InvalidArgument("k_pages", "one head per page ([num_pages, page_size, 1, head_dim]) with a "
                                       "head-paged block_table [batch, kv_heads, max_pages], got " + shape_str(kp));
    }
    require_shape("block_table", bt, {p.batch, bt.shape[1], bt.shape[2]});
    p.bt_batch_stride = bt.stride[0];
    p.bt_head_stride = bt.stride[1];
    p.bt_page_stride = bt.stride[2];
    p.head_paged = true;
  } else {
    throw InvalidArgument("block_table", "rank 2 [batch, max_pages] (or 3 [batch, kv_heads, max_pages], "
                                         "head-paged), got " + shape_str(bt));
  }
  const int64_t max_pages = bt.shape[bt.ndim - 1];
  if (max_pages * kp.shape[1] > (int64_t(1) << 30)) {
    throw InvalidArgument("block_table", "max_pages * page_size below 2^30 tokens, got " +
                                             std::to_string(max_pages) + " * " + std::to_string(kp.shape[1]));
  }
  if (Hkv < 1 || H % Hkv != 0) {
    throw InvalidArgument(p.head_paged ? "block_table" : "k_pages",
                          "a number of KV heads that divides q's " + std::to_string(H) + ", got " +
                              std::to_string(Hkv));
  }
  p.num_kv_heads = static_cast<int32_t>(Hkv);
  p.k_pages = kp.data;
  p.v_pages = vp.data;
  p.k_page_stride = kp.stride[0];
  p.k_token_stride = kp.stride[1];
  p.k_head_stride = p.head_paged ? 0 : kp.stride[2];
  p.v_page_stride = vp.stride[0];
  p.v_token_stride = vp.stride[1];
  p.v_head_stride = p.head_paged ? 0 : vp.stride[2];
  p.num_pages = static_cast<int32_t>(kp.shape[0]);
  p.page_size = static_cast<int32_t>(kp.shape[1]);
  p.max_pages = static_cast<int32_t>(max_pages);
  p.block_table = static_cast<const int32_t*>(bt.data);
  p.context_lens = int_vector("context_lens", kv.context_lens, dev, p.batch, "batch");

  // Outputs.
  if (with_outputs) {
    p.out_stride = q_like("out", out, q, varlen);
    p.out = out.data;
    if (lse.defined()) {
      require_defined("lse", lse);
      require_device("lse", lse, dev);
      require_dtype("lse", lse, DType::f32, "");
      if (varlen) {
        require_shape("lse", lse, {H, q.shape[0]});
        p.lse_stride = SeqStrides{0, lse.stride[1], lse.stride[0]};
      } else {
        require_shape("lse", lse, {q.shape[0], H, q.shape[1]});
        p.lse_stride = SeqStrides{lse.stride[0], lse.stride[2], lse.stride[1]};
      }
      p.lse = static_cast<float*>(lse.data);
    }
  }

  // The pattern must describe these heads.
  const PatternRules& r = pattern.rules();
  if (r.num_heads != H) {
    throw InvalidArgument("pattern", "defined for " + std::to_string(r.num_heads) + " query heads, q has " +
                                         std::to_string(H));
  }
  if (r.num_kv_heads != Hkv) {
    throw InvalidArgument("pattern", "defined for " + std::to_string(r.num_kv_heads) +
                                         " KV heads, the cache has " + std::to_string(Hkv));
  }
  p.pattern = r;

  const float scale = o.softmax_scale.value_or(1.f / std::sqrt(static_cast<float>(D)));
  if (!std::isfinite(scale)) throw InvalidArgument("softmax_scale", "a finite number");
  p.scale = scale;
  if (o.num_threads < 0) throw InvalidArgument("num_threads", ">= 0 (0 = all hardware threads)");
  if (o.num_splits < 0) throw InvalidArgument("num_splits", ">= 0 (0 = automatic), got " + std::to_string(o.num_splits));
  p.num_threads = o.num_threads;
  p.stream = o.stream;
  p.device = dev.index;

  // Block masks on CUDA: the pattern's cached device lists (uploaded once when cold; Pattern::prepare).
  if (r.use_mask && dev.type == DeviceType::cuda) p.pattern.mask = pattern.mask_view(dev, o.stream);
  if (dev.type == DeviceType::cpu) {
    check_cpu_values(p);
    if (varlen) {
      p.q_len = 0;
      for (int32_t b = 0; b < p.batch; ++b) p.q_len = std::max(p.q_len, p.len_q(b));
    }
  }
  return p;
}

CombineParams make_combine_params(const std::vector<TensorView>& outs, const std::vector<TensorView>& lses,
                                  const TensorView& out, const TensorView& lse, const CombineOptions& o) {
  if (outs.empty() || outs.size() > size_t(CombineParams::kMaxPartitions)) {
    throw InvalidArgument("outs", "1 to " + std::to_string(CombineParams::kMaxPartitions) + " partitions, got " +
                                      std::to_string(outs.size()));
  }
  if (lses.size() != outs.size()) {
    throw InvalidArgument("lses", "one LSE per output (" + std::to_string(outs.size()) + "), got " +
                                      std::to_string(lses.size()));
  }
  require_defined("out", out);
  if (out.ndim != 3 && out.ndim != 4) {
    throw InvalidArgument("out", "rank 4 [batch, seqlen, heads, head_dim] or 3 [total, heads, head_dim], got " +
                                     shape_str(out));
  }
  if (!is_float_io(out.dtype)) {
    throw DTypeMismatch("out", std::string("dtype float32, float16 or bfloat16, got ") + dtype_name(out.dtype));
  }
  require_last_contiguous("out", out);
  const bool varlen = out.ndim == 3;
  CombineParams p;
  p.num_partitions = static_cast<int32_t>(outs.size());
  p.dtype = out.dtype;
  p.batch = varlen ? 1 : static_cast<int32_t>(out.shape[0]);
  p.seqlen = static_cast<int32_t>(varlen ? out.shape[0] : out.shape[1]);
  p.num_heads = static_cast<int32_t>(out.shape[out.ndim - 2]);
  p.head_dim = static_cast<int32_t>(out.shape[out.ndim - 1]);
  if (out.numel() > (int64_t(1) << 40) || p.seqlen < 0) throw InvalidArgument("out", "a smaller tensor");
  auto seq_strides = [&](const TensorView& t) {
    return varlen ? SeqStrides{0, t.stride[0], t.stride[1]} : SeqStrides{t.stride[0], t.stride[1], t.stride[2]};
  };
  auto lse_strides = [&](const char* name, const TensorView& t) {
    require_defined(name, t);
    require_device(name, t, out.device);
    require_dtype(name, t, DType::f32, "");
    if (varlen) {
      require_shape(name, t, {p.num_heads, p.seqlen});
      return SeqStrides{0, t.stride[1], t.stride[0]};
    }
    require_shape(name, t, {p.batch, p.num_heads, p.seqlen});
    return SeqStrides{t.stride[0], t.stride[2], t.stride[1]};
  };
  p.out = out.data;
  p.out_stride = seq_strides(out);
  if (lse.defined()) {
    p.lse_stride = lse_strides("lse", lse);
    p.lse = static_cast<float*>(lse.data);
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    const TensorView& t = outs[i];
    require_defined("outs", t);
    require_device("outs", t, out.device);
    if (t.dtype != out.dtype) {
      throw DTypeMismatch("outs", std::string("dtype ") + dtype_name(out.dtype) + " (as out), got " +
                                      dtype_name(t.dtype) + " for partition " + std::to_string(i));
    }
    if (t.ndim != out.ndim || !std::equal(t.shape, t.shape + t.ndim, out.shape)) {
      throw InvalidArgument("outs", "every partition of shape " + shape_str(out) + ", got " + shape_str(t) +
                                        " for partition " + std::to_string(i));
    }
    require_last_contiguous("outs", t);
    p.outs[i] = t.data;
    p.out_strides[i] = seq_strides(t);
    p.lse_strides[i] = lse_strides("lses", lses[i]);
    p.lses[i] = static_cast<const float*>(lses[i].data);
  }
  if (o.num_threads < 0) throw InvalidArgument("num_threads", ">= 0 (0 = all hardware threads)");
  p.num_threads = o.num_threads;
  p.stream = o.stream;
  p.device = out.device.index;
  return p;
}

}  // namespace s2attn
