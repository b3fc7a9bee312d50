// The CPU backend: tiled online-softmax attention over the visible blocks only, multi-threaded.
// Inputs f32/f16/bf16, fp32 accumulation. The reference every other backend is checked against, and the
// fallback that runs anywhere. Params are validated by the front door (src/api/validate.cpp).
#pragma once
#include "common/attention_params.h"

namespace s2attn::cpu {

void forward(const AttentionParams& params);
void backward(const AttentionBwdParams& params);

}  // namespace s2attn::cpu
