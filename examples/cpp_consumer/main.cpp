// A consumer of the installed library: S2 attention on the CPU through the public C++ API.
#include <s2attn/s2attn.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  const int B = 1, S = 512, H = 4, D = 64;
  s2attn::LocalStrideParams params;
  params.num_heads = H;
  params.block_size = 64;
  params.local_blocks = 2;
  params.vert_stride = 4;
  const s2attn::Pattern pattern = s2attn::Pattern::local_stride(params);

  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::vector<float> q(B * S * H * D), k(q.size()), v(q.size()), out(q.size()), lse(B * H * S);
  for (auto* t : {&q, &k, &v})
    for (float& x : *t) x = normal(rng);

  using s2attn::DType;
  s2attn::forward(pattern, s2attn::make_view(q.data(), DType::f32, {B, S, H, D}),
                  s2attn::make_view(k.data(), DType::f32, {B, S, H, D}),
                  s2attn::make_view(v.data(), DType::f32, {B, S, H, D}),
                  s2attn::make_view(out.data(), DType::f32, {B, S, H, D}),
                  s2attn::make_view(lse.data(), DType::f32, {B, H, S}));
  double sum = 0;
  for (float x : out) sum += std::fabs(x);
  std::printf("s2attn example: density %.3f, mean |out| %.4f\n", pattern.density(S, S), sum / out.size());

  try {  // bad input raises a typed error naming the argument
    s2attn::forward(pattern, s2attn::make_view(q.data(), DType::f32, {B, S, H + 1, D}),
                    s2attn::make_view(k.data(), DType::f32, {B, S, H, D}),
                    s2attn::make_view(v.data(), DType::f32, {B, S, H, D}),
                    s2attn::make_view(out.data(), DType::f32, {B, S, H, D}), s2attn::TensorView{});
    std::printf("expected an error\n");
    return 1;
  } catch (const s2attn::InvalidArgument& e) {
    std::printf("typed error as expected: %s\n", e.what());
  }
  return 0;
}
