// The CPU backend (forward and backward) against a naive double-precision reference, on random inputs:
// odd lengths, decode-like and chunked shapes, GQA/MQA, varlen, strided layouts, every rule kind and block
// masks, f32/f16/bf16. Outputs are poisoned with NaN before each call, so an element left unwritten fails.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "check.h"
#include "common/attention_params.h"
#include "common/half.h"
#include "cpu/cpu_backend.h"
#include "s2attn/pattern_rules.h"

using namespace s2attn;

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------------------
// Operands: raw storage of f32/f16/bf16 elements, read and written as float.

struct Buffer {
  DType dt = DType::f32;
  std::vector<uint16_t> h;  // f16 / bf16
  std::vector<float> f;     // f32

  Buffer(DType t, int64_t n) : dt(t) {
    if (t == DType::f32) {
      f.assign(size_t(n), 0.f);
    } else {
      h.assign(size_t(n), 0);
    }
  }
  void* data() { return dt == DType::f32 ? static_cast<void*>(f.data()) : static_cast<void*>(h.data()); }
  int64_t size() const { return dt == DType::f32 ? int64_t(f.size()) : int64_t(h.size()); }
  float get(int64_t i) const {
    if (dt == DType::f32) return f[size_t(i)];
    return dt == DType::bf16 ? bf16_to_float(h[size_t(i)]) : half_to_float(h[size_t(i)]);
  }
  void set(int64_t i, float v) {
    if (dt == DType::f32) {
      f[size_t(i)] = v;
    } else {
      h[size_t(i)] = dt == DType::bf16 ? float_to_bf16(v) : float_to_half(v);
    }
  }
  void poison() {
    for (int64_t i = 0; i < size(); ++i) set(i, std::numeric_limits<float>::quiet_NaN());
  }
};

// ---------------------------------------------------------------------------------------------------------
// A test case.

struct Case {
  std::string name;
  PatternRules pat;
  DType dt = DType::f32;
  int H = 2, Hkv = 2, D = 32;
  int B = 1, Sq = 64, Sk = 64;      // dense batch
  std::vector<int> lens_q, lens_k;  // varlen when non-empty (B = size)
  int64_t q_offset = -1;
  bool bhsd = false;  // [B, H, S, D] memory order, with a gap after each row
  float q_mul = 1.f;  // larger: peakier softmax
  int threads = 2;
};

int64_t off(const SeqStrides& s, int64_t b, int64_t tok, int64_t h) {
  return b * s.batch + tok * s.seq + h * s.head;
}

// Strides of a [batch, tokens, heads, D] operand; varlen: batch stride 0.
SeqStrides strides(bool bhsd, bool varlen, int64_t tokens, int heads, int D) {
  SeqStrides s;
  if (bhsd) {
    s.seq = D + 8;  // a gap after each row, poisoned: reading it would show up as NaN
    s.head = tokens * s.seq;
    s.batch = varlen ? 0 : heads * s.head;
  } else {
    s.head = D;
    s.seq = int64_t(heads) * D;
    s.batch = varlen ? 0 : tokens * s.seq;
  }
  return s;
}

bool visible(const PatternRules& pat, int h, int64_t pos, int64_t t) {
  if (pos < 0) return false;
  const int bs = pat.block_size;
  if (!attends(pat, h, static_cast<int32_t>(pos / bs), static_cast<int32_t>(t / bs))) return false;
  return !(pat.causal && t > pos);
}

double rel_err(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  if (den == 0) return num == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

void run_case(const Case& c) {
  const bool varlen = !c.lens_q.empty();
  const int B = varlen ? static_cast<int>(c.lens_q.size()) : c.B;
  std::vector<int> lq(B), lk(B);
  std::vector<int32_t> cu_q(B + 1, 0), cu_k(B + 1, 0);
  for (int b = 0; b < B; ++b) {
    lq[b] = varlen ? c.lens_q[b] : c.Sq;
    lk[b] = varlen ? c.lens_k[b] : c.Sk;
    cu_q[b + 1] = cu_q[b] + lq[b];
    cu_k[b + 1] = cu_k[b] + lk[b];
  }
  const int64_t tq = varlen ? cu_q[B] : c.Sq;  // tokens along the layout's seq dim
  const int64_t tk = varlen ? cu_k[B] : c.Sk;
  const int bq = varlen ? 1 : B;  // layout's batch extent
  const SeqStrides sq = strides(c.bhsd, varlen, tq, c.H, c.D);
  const SeqStrides sk = strides(c.bhsd, varlen, tk, c.Hkv, c.D);
  const int64_t nq = c.bhsd ? bq * c.H * tq * sq.seq : bq * tq * sq.seq;
  const int64_t nk = c.bhsd ? bq * c.Hkv * tk * sk.seq : bq * tk * sk.seq;

  Buffer q(c.dt, nq), k(c.dt, nk), v(c.dt, nk), out(c.dt, nq), dout(c.dt, nq), dq(c.dt, nq), dk(c.dt, nk),
      dv(c.dt, nk);
  std::mt19937 rng(12345u + static_cast<unsigned>(c.name.size()) * 7919u);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (Buffer* buf : {&q, &k, &v, &dout}) {
    buf->poison();  // the gaps of strided layouts stay NaN
  }
  auto begin_q = [&](int b) { return varlen ? int64_t(cu_q[b]) : 0; };
  auto begin_k = [&](int b) { return varlen ? int64_t(cu_k[b]) : 0; };
  auto qi = [&](int b, int r, int h) { return off(sq, varlen ? 0 : b, begin_q(b) + r, h); };
  auto ki = [&](int b, int t, int h) { return off(sk, varlen ? 0 : b, begin_k(b) + t, h); };
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < c.H; ++h) {
      for (int r = 0; r < lq[b]; ++r) {
        for (int d = 0; d < c.D; ++d) {
          q.set(qi(b, r, h) + d, c.q_mul * normal(rng));
          dout.set(qi(b, r, h) + d, normal(rng));
        }
      }
    }
    for (int h = 0; h < c.Hkv; ++h) {
      for (int t = 0; t < lk[b]; ++t) {
        for (int d = 0; d < c.D; ++d) {
          k.set(ki(b, t, h) + d, normal(rng));
          v.set(ki(b, t, h) + d, normal(rng));
        }
      }
    }
  }

  AttentionBwdParams p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.out = out.data();
  p.dout = dout.data();
  p.dq = dq.data();
  p.dk = dk.data();
  p.dv = dv.data();
  p.q_stride = p.out_stride = p.dout_stride = p.dq_stride = sq;
  p.k_stride = p.v_stride = p.dk_stride = p.dv_stride = sk;
  p.dtype = c.dt;
  p.batch = B;
  p.num_heads = c.H;
  p.num_kv_heads = c.Hkv;
  p.head_dim = c.D;
  p.seqlen_q = varlen ? *std::max_element(lq.begin(), lq.end()) : c.Sq;
  p.seqlen_k = varlen ? *std::max_element(lk.begin(), lk.end()) : c.Sk;
  p.cu_seqlens_q = varlen ? cu_q.data() : nullptr;
  p.cu_seqlens_k = varlen ? cu_k.data() : nullptr;
  p.q_offset = c.q_offset;
  p.scale = 1.f / std::sqrt(static_cast<float>(c.D));
  p.pattern = c.pat;
  p.num_threads = c.threads;
  // lse [B, H, Sq] (varlen: [H, total])
  std::vector<float> lse(size_t(bq) * c.H * tq);
  p.lse = lse.data();
  p.lse_stride.seq = 1;
  p.lse_stride.head = tq;
  p.lse_stride.batch = varlen ? 0 : c.H * tq;
  auto li = [&](int b, int r, int h) {
    return b * p.lse_stride.batch + h * p.lse_stride.head + (begin_q(b) + r) * p.lse_stride.seq;
  };

  // ---- reference forward and backward, in double ----
  const int G = c.H / c.Hkv;
  const double scale = p.scale;
  std::vector<double> ref_out(size_t(nq), 0.0), ref_lse(lse.size(), kNegInf);
  std::vector<double> ref_dq(size_t(nq), 0.0), ref_dk(size_t(nk), 0.0), ref_dv(size_t(nk), 0.0);
  std::vector<char> q_valid(size_t(nq), 0), k_valid(size_t(nk), 0), lse_valid(lse.size(), 0);
  std::vector<char> q_empty(size_t(nq), 0);
  std::vector<double> s, pr, dp;
  for (int b = 0; b < B; ++b) {
    const int64_t offset = c.q_offset >= 0 ? c.q_offset : int64_t(lk[b]) - lq[b];
    for (int h = 0; h < c.H; ++h) {
      const int hk = h / G;
      for (int r = 0; r < lq[b]; ++r) {
        const int64_t pos = offset + r;
        const int64_t qo = qi(b, r, h);
        lse_valid[size_t(li(b, r, h))] = 1;
        for (int d = 0; d < c.D; ++d) q_valid[size_t(qo + d)] = 1;
        s.assign(size_t(lk[b]), kNegInf);
        double mx = kNegInf;
        for (int t = 0; t < lk[b]; ++t) {
          if (!visible(c.pat, h, pos, t)) continue;
          double acc = 0;
          for (int d = 0; d < c.D; ++d) acc += double(q.get(qo + d)) * k.get(ki(b, t, hk) + d);
          s[size_t(t)] = scale * acc;
          mx = std::max(mx, s[size_t(t)]);
        }
        if (mx == kNegInf) {
          for (int d = 0; d < c.D; ++d) q_empty[size_t(qo + d)] = 1;
          continue;
        }
        double sum = 0;
        for (int t = 0; t < lk[b]; ++t) sum += s[size_t(t)] == kNegInf ? 0 : std::exp(s[size_t(t)] - mx);
        const double lse_r = mx + std::log(sum);
        ref_lse[size_t(li(b, r, h))] = lse_r;
        for (int t = 0; t < lk[b]; ++t) {
          if (s[size_t(t)] == kNegInf) continue;
          const double w = std::exp(s[size_t(t)] - lse_r);
          for (int d = 0; d < c.D; ++d) ref_out[size_t(qo + d)] += w * v.get(ki(b, t, hk) + d);
        }
      }
    }
    for (int h = 0; h < c.Hkv; ++h) {
      for (int t = 0; t < lk[b]; ++t) {
        for (int d = 0; d < c.D; ++d) k_valid[size_t(ki(b, t, h) + d)] = 1;
      }
    }
  }

  const double tol = c.dt == DType::f32 ? 1e-5 : 1e-2;
  auto gather = [](const Buffer& buf, const std::vector<char>& valid, bool& finite) {
    std::vector<double> x;
    finite = true;
    for (int64_t i = 0; i < buf.size(); ++i) {
      if (!valid[size_t(i)]) continue;
      const float f = buf.get(i);
      if (!std::isfinite(f)) finite = false;
      x.push_back(f);
    }
    return x;
  };
  auto pick = [](const std::vector<double>& ref, const std::vector<char>& valid) {
    std::vector<double> x;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (valid[i]) x.push_back(ref[i]);
    }
    return x;
  };
  auto check_close = [&](const char* what, const Buffer& got, const std::vector<double>& ref,
                         const std::vector<char>& valid) {
    bool finite = true;
    const std::vector<double> g = gather(got, valid, finite);
    const double e = rel_err(g, pick(ref, valid));
    CHECK_MSG(finite, "%s: %s has non-finite values (unwritten?)", c.name.c_str(), what);
    CHECK_MSG(e <= tol, "%s: %s relative error %.3g > %.3g", c.name.c_str(), what, e, tol);
  };
  auto check_empty_rows = [&](const char* what, const Buffer& got) {
    for (int64_t i = 0; i < got.size(); ++i) {
      if (q_empty[size_t(i)] && got.get(i) != 0.f) {
        CHECK_MSG(false, "%s: %s of a row that sees nothing is %g, not 0", c.name.c_str(), what, got.get(i));
        return;
      }
    }
  };
  auto check_lse = [&]() {
    std::vector<double> g, r;
    for (size_t i = 0; i < lse.size(); ++i) {
      if (!lse_valid[i]) continue;
      if (ref_lse[i] == kNegInf) {
        CHECK_MSG(lse[i] == -std::numeric_limits<float>::infinity(), "%s: lse of an empty row is %g",
                  c.name.c_str(), lse[i]);
        continue;
      }
      CHECK_MSG(std::isfinite(lse[i]), "%s: lse[%zu] = %g", c.name.c_str(), i, lse[i]);
      g.push_back(lse[i]);
      r.push_back(ref_lse[i]);
    }
    const double e = rel_err(g, r);
    CHECK_MSG(e <= 1e-5, "%s: lse relative error %.3g", c.name.c_str(), e);
  };

  // ---- forward ----
  out.poison();
  std::fill(lse.begin(), lse.end(), std::numeric_limits<float>::quiet_NaN());
  cpu::forward(p);
  check_close("out", out, ref_out, q_valid);
  check_empty_rows("out", out);
  check_lse();
  {  // without lse, and with one thread: the same output
    std::vector<uint16_t> h_first = out.h;
    std::vector<float> f_first = out.f;
    AttentionParams p1 = p;
    p1.lse = nullptr;
    p1.num_threads = 1;
    out.poison();
    cpu::forward(p1);
    bool same = true;
    for (int64_t i = 0; i < nq; ++i) {
      if (!q_valid[size_t(i)]) continue;
      if (c.dt == DType::f32 ? f_first[size_t(i)] != out.f[size_t(i)]
                             : h_first[size_t(i)] != out.h[size_t(i)]) {
        same = false;
      }
    }
    CHECK_MSG(same, "%s: forward differs with 1 thread / without lse", c.name.c_str());
  }

  // ---- backward: out = reference output rounded to the dtype, lse = reference lse ----
  for (int64_t i = 0; i < nq; ++i) {
    if (q_valid[size_t(i)]) out.set(i, static_cast<float>(ref_out[size_t(i)]));
  }
  for (size_t i = 0; i < lse.size(); ++i) lse[i] = static_cast<float>(ref_lse[i]);
  for (int b = 0; b < B; ++b) {
    const int64_t offset = c.q_offset >= 0 ? c.q_offset : int64_t(lk[b]) - lq[b];
    for (int h = 0; h < c.H; ++h) {
      const int hk = h / G;
      for (int r = 0; r < lq[b]; ++r) {
        const int64_t pos = offset + r;
        const int64_t qo = qi(b, r, h);
        const double lse_r = ref_lse[size_t(li(b, r, h))];
        if (lse_r == kNegInf) continue;
        double di = 0;  // rowsum(dO * O) with O as the kernel sees it
        for (int d = 0; d < c.D; ++d) di += double(dout.get(qo + d)) * out.get(qo + d);
        for (int t = 0; t < lk[b]; ++t) {
          if (!visible(c.pat, h, pos, t)) continue;
          const int64_t ko = ki(b, t, hk);
          double sc = 0, dpv = 0;
          for (int d = 0; d < c.D; ++d) {
            sc += double(q.get(qo + d)) * k.get(ko + d);
            dpv += double(dout.get(qo + d)) * v.get(ko + d);
          }
          const double w = std::exp(scale * sc - lse_r);
          const double ds = w * (dpv - di);
          for (int d = 0; d < c.D; ++d) {
            ref_dq[size_t(qo + d)] += scale * ds * k.get(ko + d);
            ref_dk[size_t(ko + d)] += scale * ds * q.get(qo + d);
            ref_dv[size_t(ko + d)] += w * dout.get(qo + d);
          }
        }
      }
    }
  }
  dq.poison();
  dk.poison();
  dv.poison();
  cpu::backward(p);
  check_close("dq", dq, ref_dq, q_valid);
  check_close("dk", dk, ref_dk, k_valid);
  check_close("dv", dv, ref_dv, k_valid);
  check_empty_rows("dq", dq);
  {  // deterministic: the same bits with another thread count
    const Buffer dq1 = dq, dk1 = dk, dv1 = dv;
    AttentionBwdParams p3 = p;
    p3.num_threads = c.threads == 1 ? 3 : 1;
    dq.poison();
    dk.poison();
    dv.poison();
    cpu::backward(p3);
    bool same = true;
    for (const auto& [a, bref, valid] :
         {std::tuple<const Buffer*, const Buffer*, const std::vector<char>*>{&dq, &dq1, &q_valid},
          {&dk, &dk1, &k_valid},
          {&dv, &dv1, &k_valid}}) {
      for (int64_t i = 0; i < a->size(); ++i) {
        if ((*valid)[size_t(i)] && float_bits(a->get(i)) != float_bits(bref->get(i))) same = false;
      }
    }
    CHECK_MSG(same, "%s: backward differs with another thread count", c.name.c_str());
  }
}

// ---------------------------------------------------------------------------------------------------------
// Patterns

PatternRules local_stride(int bs, int H, int Hkv, int local, int stride, bool causal = true) {
  PatternRules r;
  r.block_size = bs;
  r.causal = causal;
  r.num_heads = H;
  r.num_kv_heads = Hkv;
  r.local_left = local;
  r.local_right = causal ? 1 : local;
  r.vert_stride = stride;
  r.head_step = std::max(1, stride / H);
  r.vert_position = static_cast<int32_t>(causal ? VertPosition::absolute : VertPosition::relative);
  return r;
}

// A random block mask [heads, rows, cols] (AND-ed with causality) with its row and column lists.
struct MaskStorage {
  std::vector<uint8_t> bits;
  std::vector<int32_t> row_ptr, col_idx, col_ptr, row_idx;
  BlockMaskView view(int heads, int rows, int cols) const {
    BlockMaskView m;
    m.bits = bits.data();
    m.row_ptr = row_ptr.data();
    m.col_idx = col_idx.data();
    m.col_ptr = col_ptr.data();
    m.row_idx = row_idx.data();
    m.heads = heads;
    m.rows = rows;
    m.cols = cols;
    return m;
  }
};

MaskStorage random_mask(int heads, int rows, int cols, bool causal, unsigned seed, int empty_row) {
  MaskStorage m;
  std::mt19937 rng(seed);
  m.bits.assign(size_t(heads) * rows * cols, 0);
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < rows; ++i) {
      for (int j = 0; j < cols; ++j) {
        const bool on = (rng() % 5) < 2 || (i == j && i % 3 == 0);
        m.bits[(size_t(h) * rows + i) * cols + j] = on && !(causal && j > i) && i != empty_row;
      }
    }
  }
  m.row_ptr.push_back(0);
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < rows; ++i) {
      for (int j = 0; j < cols; ++j) {
        if (m.bits[(size_t(h) * rows + i) * cols + j]) m.col_idx.push_back(j);
      }
      m.row_ptr.push_back(static_cast<int32_t>(m.col_idx.size()));
    }
  }
  m.col_ptr.push_back(0);
  for (int h = 0; h < heads; ++h) {
    for (int j = 0; j < cols; ++j) {
      for (int i = 0; i < rows; ++i) {
        if (m.bits[(size_t(h) * rows + i) * cols + j]) m.row_idx.push_back(i);
      }
      m.col_ptr.push_back(static_cast<int32_t>(m.row_idx.size()));
    }
  }
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------

S2_TEST(half_conversions) {
  int bad = 0;
  for (uint32_t x = 0; x < 65536; ++x) {
    const uint16_t hx = static_cast<uint16_t>(x);
    const float fh = half_to_float(hx), fb = bf16_to_float(hx);
    if (std::isnan(fh) ? !std::isnan(half_to_float(float_to_half(fh))) : float_to_half(fh) != hx) ++bad;
    if (std::isnan(fb) ? !std::isnan(bf16_to_float(float_to_bf16(fb))) : float_to_bf16(fb) != hx) ++bad;
  }
  CHECK_MSG(bad == 0, "%d 16-bit values do not round-trip", bad);
  CHECK(half_to_float(0x3c00) == 1.f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.f, -24));  // smallest subnormal
  CHECK(half_to_float(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(float_to_half(65504.f) == 0x7bff);
  CHECK(float_to_half(65520.f) == 0x7c00);                     // rounds up to inf
  CHECK(float_to_half(1.f + std::ldexp(1.f, -11)) == 0x3c00);  // tie to even
  CHECK(float_to_half(1.f + 3 * std::ldexp(1.f, -11)) == 0x3c02);
  CHECK(float_to_half(std::ldexp(1.f, -25)) == 0x0000);  // tie to even (0)
  CHECK(float_to_half(std::ldexp(3.f, -25)) == 0x0002);
  CHECK(float_to_bf16(1.f) == 0x3f80);
  CHECK(float_to_bf16(bits_float(0x3f808000u)) == 0x3f80);  // tie to even
  CHECK(float_to_bf16(bits_float(0x3f818000u)) == 0x3f82);
  CHECK(float_to_bf16(bits_float(0x3f808001u)) == 0x3f81);
  CHECK(std::isnan(bf16_to_float(float_to_bf16(bits_float(0x7f800001u)))));  // NaN with a low payload
  CHECK(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xff80);
}

S2_TEST(causal_local_stride_gqa_odd_length) {
  Case c;
  c.name = "causal_gqa_77";
  c.pat = local_stride(16, 4, 2, 2, 3);
  c.H = 4, c.Hkv = 2, c.D = 32, c.Sq = c.Sk = 77;
  c.q_mul = 2.f;
  run_case(c);
}

S2_TEST(causal_block64_d128_batch2) {
  Case c;
  c.name = "causal_b64_d128";
  c.pat = local_stride(64, 2, 2, 1, 2);
  c.H = 2, c.Hkv = 2, c.D = 128, c.B = 2, c.Sq = c.Sk = 200;
  run_case(c);
}

S2_TEST(bidirectional_relative_vertical) {
  Case c;
  c.name = "bidir_relative";
  c.pat = local_stride(16, 2, 2, 2, 3, /*causal=*/false);
  c.pat.local_right = 3;
  c.H = 2, c.Hkv = 2, c.D = 64, c.Sq = c.Sk = 200;
  run_case(c);
}

S2_TEST(sink_and_range_rules) {
  Case c;
  c.name = "sink_ranges";
  PatternRules r = local_stride(16, 3, 3, 1, 0);
  r.sink_blocks = 1;
  r.num_ranges = 2;
  r.ranges[0] = RangeRule{2, 6, 2, 0};  // key blocks [2, 6), every other one
  r.ranges[1] = RangeRule{3, 5, 1, 1};  // distances 3..4 dense
  r.head_step = 1;
  c.pat = r;
  c.H = c.Hkv = 3, c.D = 32, c.Sq = c.Sk = 150;
  run_case(c);
}

S2_TEST(dense_heads_and_dense_prefix) {
  Case c;
  c.name = "dense_heads";
  PatternRules r = local_stride(16, 4, 2, 1, 4);
  r.dense_heads[0] = 1u << 1;  // KV head 1 (pattern heads are KV heads) is dense
  r.dense_prefix_blocks = 2;
  c.pat = r;
  c.H = 4, c.Hkv = 2, c.D = 32, c.Sq = c.Sk = 100;
  run_case(c);
}

S2_TEST(gqa_partial_group_packing) {
  Case c;  // block 128: two of the four q heads of a group per task
  c.name = "gqa4_b128";
  c.pat = local_stride(128, 4, 1, 1, 2);
  c.H = 4, c.Hkv = 1, c.D = 32, c.Sq = c.Sk = 300;
  run_case(c);
}

S2_TEST(decode_single_query_mqa) {
  Case c;
  c.name = "decode_sq1_mqa";
  c.pat = local_stride(16, 3, 1, 2, 3);
  c.H = 3, c.Hkv = 1, c.D = 64, c.Sq = 1, c.Sk = 150, c.B = 2;
  run_case(c);
}

S2_TEST(chunked_prefill_short_q) {
  Case c;
  c.name = "sq37_sk150";
  c.pat = local_stride(16, 4, 2, 2, 3);
  c.H = 4, c.Hkv = 2, c.D = 32, c.Sq = 37, c.Sk = 150;
  run_case(c);
}

S2_TEST(explicit_q_offset) {
  Case c;
  c.name = "q_offset_64";
  c.pat = local_stride(32, 2, 2, 1, 2);
  c.H = c.Hkv = 2, c.D = 32, c.Sq = 50, c.Sk = 150, c.q_offset = 64;
  run_case(c);
}

S2_TEST(varlen_bf16) {
  Case c;
  c.name = "varlen_bf16";
  c.dt = DType::bf16;
  c.pat = local_stride(16, 4, 2, 2, 3);
  c.H = 4, c.Hkv = 2, c.D = 64;
  c.lens_q = {33, 1, 70};
  c.lens_k = {40, 17, 70};
  run_case(c);
}

S2_TEST(varlen_bidirectional_f32) {
  Case c;
  c.name = "varlen_bidir";
  c.pat = local_stride(16, 2, 2, 1, 2, /*causal=*/false);
  c.H = 2, c.Hkv = 2, c.D = 32;
  c.lens_q = {45, 1, 20};
  c.lens_k = {45, 1, 20};
  c.threads = 3;
  run_case(c);
}

S2_TEST(bhsd_strides_f16) {
  Case c;
  c.name = "bhsd_f16_d128";
  c.dt = DType::f16;
  c.bhsd = true;
  c.pat = local_stride(64, 2, 1, 1, 2);
  c.H = 2, c.Hkv = 1, c.D = 128, c.Sq = c.Sk = 130;
  run_case(c);
}

S2_TEST(bhsd_strides_bf16_varlen) {
  Case c;
  c.name = "bhsd_bf16_varlen";
  c.dt = DType::bf16;
  c.bhsd = true;
  c.pat = local_stride(16, 2, 2, 2, 2);
  c.H = c.Hkv = 2, c.D = 32;
  c.lens_q = {20, 37};
  c.lens_k = {50, 37};
  run_case(c);
}

S2_TEST(more_queries_than_keys_causal) {
  Case c;  // offset = Sk - Sq < 0: the first rows see nothing (out 0, lse -inf, dq 0)
  c.name = "sq_gt_sk";
  c.pat = local_stride(16, 2, 2, 2, 2);
  c.H = c.Hkv = 2, c.D = 32, c.Sq = 40, c.Sk = 20;
  run_case(c);
}

S2_TEST(block_mask_with_empty_rows) {
  const int bs = 16, S = 100, nb = (S + bs - 1) / bs;
  const MaskStorage m = random_mask(2, nb, nb, true, 7u, /*empty_row=*/2);
  Case c;
  c.name = "mask_causal";
  c.pat = local_stride(bs, 4, 2, 1, 0);
  c.pat.use_mask = 1;
  c.pat.mask = m.view(2, nb, nb);
  c.H = 4, c.Hkv = 2, c.D = 32, c.Sq = c.Sk = S;
  run_case(c);

  const MaskStorage m2 = random_mask(3, nb, nb, false, 11u, /*empty_row=*/4);
  Case c2;
  c2.name = "mask_bidir_per_q_head";
  c2.pat = local_stride(bs, 3, 1, 1, 0, false);
  c2.pat.use_mask = 1;
  c2.pat.mask = m2.view(3, nb, nb);
  c2.H = 3, c2.Hkv = 1, c2.D = 32, c2.Sq = c2.Sk = S;
  run_case(c2);
}

S2_TEST(odd_head_dims) {
  for (int D : {8, 20, 72}) {
    Case c;
    c.name = "head_dim_" + std::to_string(D);
    c.pat = local_stride(32, 2, 2, 2, 2);
    c.H = c.Hkv = 2, c.D = D, c.Sq = c.Sk = 90;
    run_case(c);
  }
}

S2_TEST(block128_head_dim_256) {
  Case c;
  c.name = "b128_d256";
  c.pat = local_stride(128, 1, 1, 1, 2);
  c.H = c.Hkv = 1, c.D = 256, c.Sq = c.Sk = 300;
  c.threads = 0;  // S2ATTN_NUM_THREADS or the hardware's
  run_case(c);
}

S2_TEST(per_q_head_and_homo_head_patterns) {
  Case c;  // GQA with a pattern per q head: the KV pass walks the union of its q heads' columns
  c.name = "per_q_head_gqa";
  c.pat = local_stride(16, 4, 2, 2, 4);
  c.pat.per_q_head = 1;
  c.pat.head_offset = 1;
  c.H = 4, c.Hkv = 2, c.D = 32, c.Sq = c.Sk = 120;
  run_case(c);

  Case h;
  h.name = "homo_head_bidir_absolute";
  h.pat = local_stride(32, 2, 2, 1, 3, /*causal=*/false);
  h.pat.vert_position = static_cast<int32_t>(VertPosition::absolute);
  h.pat.homo_head = 1;
  h.H = h.Hkv = 2, h.D = 64, h.Sq = 70, h.Sk = 130;
  run_case(h);
}

S2_TEST(zero_length_sequences) {
  Case c;  // a sequence with no keys and one with no queries
  c.name = "varlen_empty";
  c.pat = local_stride(16, 2, 2, 1, 2, /*causal=*/false);
  c.H = c.Hkv = 2, c.D = 16;
  c.lens_q = {5, 0, 9};
  c.lens_k = {0, 7, 9};
  run_case(c);
}

S2_TEST_MAIN()
