// The C++ front door: every invalid argument raises a typed error naming the argument.
#include <cmath>
#include <string>
#include <vector>

#include "check.h"
#include "expect_invalid.h"
#include "s2attn/s2attn.h"

using namespace s2attn;

namespace {

using s2test::expect_invalid;

struct Buffers {
  int B = 2, S = 40, H = 4, Hkv = 2, D = 32;
  std::vector<float> q, k, v, out, lse, dout, dq, dk, dv;
  Buffers() {
    q.assign(size_t(B) * S * H * D, 0.5f);
    out = dout = dq = q;
    k.assign(size_t(B) * S * Hkv * D, 0.25f);
    v = dk = dv = k;
    lse.assign(size_t(B) * H * S, 0.f);
  }
  TensorView Q() { return make_view(q.data(), DType::f32, {B, S, H, D}); }
  TensorView K() { return make_view(k.data(), DType::f32, {B, S, Hkv, D}); }
  TensorView V() { return make_view(v.data(), DType::f32, {B, S, Hkv, D}); }
  TensorView O() { return make_view(out.data(), DType::f32, {B, S, H, D}); }
  TensorView L() { return make_view(lse.data(), DType::f32, {B, H, S}); }
};

Pattern pattern(int H = 4, int Hkv = 2) {
  LocalStrideParams a;
  a.num_heads = H;
  a.num_kv_heads = Hkv;
  a.block_size = 16;
  a.local_blocks = 2;
  a.vert_stride = 2;
  return Pattern::local_stride(a);
}

}  // namespace

S2_TEST(valid_call_runs_and_writes) {
  Buffers b;
  std::fill(b.out.begin(), b.out.end(), NAN);
  forward(pattern(), b.Q(), b.K(), b.V(), b.O(), b.L());
  bool finite = true;
  for (float x : b.out) finite = finite && std::isfinite(x);
  CHECK(finite);
}

S2_TEST(shape_dtype_stride_errors_name_the_argument) {
  Buffers b;
  const Pattern p = pattern();
  expect_invalid("q", [&] { forward(p, make_view(b.q.data(), DType::f32, {b.S, b.H, b.D}), b.K(), b.V(), b.O(), b.L()); });
  expect_invalid("k", [&] { forward(p, b.Q(), make_view(b.k.data(), DType::f32, {b.B, b.S, 3, b.D}), b.V(), b.O(), b.L()); });
  expect_invalid("v", [&] { forward(p, b.Q(), b.K(), make_view(b.v.data(), DType::f32, {b.B, b.S - 1, b.Hkv, b.D}), b.O(), b.L()); });
  expect_invalid("out", [&] { forward(p, b.Q(), b.K(), b.V(), make_view(b.out.data(), DType::f32, {b.B, b.S, b.H, b.D / 2}), b.L()); });
  expect_invalid("lse", [&] { forward(p, b.Q(), b.K(), b.V(), b.O(), make_view(b.lse.data(), DType::f32, {b.B, b.S, b.H})); });
  // dtype
  try {
    forward(p, b.Q(), make_view(b.k.data(), DType::f16, {b.B, b.S, b.Hkv, b.D}), b.V(), b.O(), b.L());
    CHECK(false);
  } catch (const DTypeMismatch& e) {
    CHECK(e.argument() == "k");
  }
  expect_invalid("q", [&] { forward(p, make_view(b.q.data(), DType::f64, {b.B, b.S, b.H, b.D / 2}), b.K(), b.V(), b.O(), b.L()); });
  expect_invalid("lse", [&] { forward(p, b.Q(), b.K(), b.V(), b.O(), make_view(b.lse.data(), DType::f16, {b.B, b.H, b.S})); });
  // stride: head dim not contiguous
  TensorView strided = b.Q();
  strided.stride[3] = 2;
  strided.shape[3] = b.D / 2;
  expect_invalid("q", [&] { forward(p, strided, b.K(), b.V(), b.O(), b.L()); });
  // device mismatch
  TensorView on_gpu = b.K();
  on_gpu.device = Device{DeviceType::cuda, 0};
  expect_invalid("k", [&] { forward(p, b.Q(), on_gpu, b.V(), b.O(), b.L()); });
  // pattern heads
  expect_invalid("pattern", [&] { forward(pattern(8, 2), b.Q(), b.K(), b.V(), b.O(), b.L()); });
  expect_invalid("pattern", [&] { forward(pattern(4, 4), b.Q(), b.K(), b.V(), b.O(), b.L()); });
  // options
  AttentionOptions o;
  o.softmax_scale = NAN;
  expect_invalid("softmax_scale", [&] { forward(p, b.Q(), b.K(), b.V(), b.O(), b.L(), o); });
  o = {};
  o.q_offset = -3;
  expect_invalid("q_offset", [&] { forward(p, b.Q(), b.K(), b.V(), b.O(), b.L(), o); });
  // backward needs lse
  expect_invalid("lse", [&] {
    backward(p, b.Q(), b.K(), b.V(), b.O(), TensorView{}, b.O(), b.O(), b.K(), b.V());
  });
}

S2_TEST(varlen_errors) {
  Buffers b;
  const Pattern p = pattern();
  const int T = b.B * b.S;
  std::vector<int32_t> cu = {0, 30, 80};
  std::vector<int32_t> bad = {0, 50, 20};
  auto q3 = make_view(b.q.data(), DType::f32, {T, b.H, b.D});
  auto k3 = make_view(b.k.data(), DType::f32, {T, b.Hkv, b.D});
  auto v3 = make_view(b.v.data(), DType::f32, {T, b.Hkv, b.D});
  auto o3 = make_view(b.out.data(), DType::f32, {T, b.H, b.D});
  AttentionOptions o;
  o.cu_seqlens_q = make_view(cu.data(), DType::i32, {3});
  o.cu_seqlens_k = make_view(cu.data(), DType::i32, {3});
  forward(p, q3, k3, v3, o3, TensorView{}, o);  // valid
  o.cu_seqlens_k = make_view(bad.data(), DType::i32, {3});
  expect_invalid("cu_seqlens_k", [&] { forward(p, q3, k3, v3, o3, TensorView{}, o); });
  o.cu_seqlens_k = make_view(cu.data(), DType::i64, {3});
  expect_invalid("cu_seqlens_k", [&] { forward(p, q3, k3, v3, o3, TensorView{}, o); });
  o.cu_seqlens_k = make_view(cu.data(), DType::i32, {2});
  expect_invalid("cu_seqlens_k", [&] { forward(p, q3, k3, v3, o3, TensorView{}, o); });
  o.cu_seqlens_k = TensorView{};
  expect_invalid("cu_seqlens_k", [&] { forward(p, q3, k3, v3, o3, TensorView{}, o); });
  std::vector<int32_t> past_end = {0, 30, T + 1};
  o.cu_seqlens_k = make_view(past_end.data(), DType::i32, {3});
  expect_invalid("cu_seqlens_k", [&] { forward(p, q3, k3, v3, o3, TensorView{}, o); });
}

S2_TEST(mask_too_small_for_the_sequence) {
  Buffers b;
  std::vector<uint8_t> bits(2 * 2, 1);  // 2 x 2 blocks of 16 cover 32 tokens; the sequence has 40
  const Pattern m = Pattern::from_block_mask(bits.data(), 1, 2, 2, b.H, 16, true, b.Hkv);
  expect_invalid("pattern.mask", [&] { forward(m, b.Q(), b.K(), b.V(), b.O(), b.L()); });
}

S2_TEST_MAIN()
