// Argument checks of the paged-KV ops: views + pattern + options -> validated params, or a typed error
// naming the argument and the expectation. Device values (block table, context lengths) are checked only
// for CPU tensors: reading device memory here would synchronise.
#pragma once
#include <vector>

#include "inference/paged_params.h"
#include "s2attn/paged.h"

namespace s2attn {

// Everything but the split count and the workspace, which the front door decides (it knows the backend).
PagedParams make_paged_params(const Pattern& pattern, const TensorView& q, const PagedKV& kv,
                              const TensorView& out, const TensorView& lse, const PagedOptions& options,
                              bool with_outputs);

CombineParams make_combine_params(const std::vector<TensorView>& outs, const std::vector<TensorView>& lses,
                                  const TensorView& out, const TensorView& lse, const CombineOptions& options);

}  // namespace s2attn
