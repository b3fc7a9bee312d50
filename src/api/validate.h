// The front door's argument checks: TensorViews + Pattern + options -> a validated params struct, or a
// typed error naming the argument and the expectation.
#pragma once
#include "common/attention_params.h"
#include "s2attn/ops.h"

namespace s2attn {

AttentionParams make_forward_params(const Pattern& pattern, const TensorView& q, const TensorView& k,
                                    const TensorView& v, const TensorView& out, const TensorView& lse,
                                    const AttentionOptions& options);

AttentionBwdParams make_backward_params(const Pattern& pattern, const TensorView& q, const TensorView& k,
                                        const TensorView& v, const TensorView& out, const TensorView& lse,
                                        const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                        const TensorView& dv, const AttentionOptions& options);

}  // namespace s2attn
