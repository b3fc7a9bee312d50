// Python binding of the paged-KV API (include/s2attn/paged.h), registered into the _s2attn module by
// bind_paged(). Thin: DLPack arrays -> TensorViews, then the C++ call. Errors are translated by the
// module's translator (binding.cpp).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "python/views.h"
#include "s2attn/s2attn.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using namespace s2attn::python;

s2attn::DType cache_dtype(const std::string& name) {
  if (name == "float32") return s2attn::DType::f32;
  if (name == "float16") return s2attn::DType::f16;
  if (name == "bfloat16") return s2attn::DType::bf16;
  if (name == "float64") return s2attn::DType::f64;
  if (name == "fp8" || name == "uint8") return s2attn::DType::u8;
  throw s2attn::InvalidArgument("dtype", "one of 'float32', 'float16', 'bfloat16', 'float64', 'fp8', got '" +
                                             name + "'");
}

s2attn::PagedKV paged_kv(const InArray& k_pages, const InArray& v_pages, const InArray& block_table,
                         const InArray& context_lens) {
  s2attn::PagedKV kv;
  kv.k_pages = view_of(k_pages, "k_pages");
  kv.v_pages = view_of(v_pages, "v_pages");
  kv.block_table = view_of(block_table, "block_table");
  kv.context_lens = view_of(context_lens, "context_lens");
  return kv;
}

s2attn::PagedOptions paged_options(std::optional<float> scale, const std::optional<InArray>& cu_q,
                                   const std::optional<OutArray>& workspace, int num_splits, int num_threads,
                                   uintptr_t stream, const std::string& backend) {
  s2attn::PagedOptions o;
  o.softmax_scale = scale;
  o.cu_seqlens_q = optional_view(cu_q, "cu_seqlens_q");
  o.workspace = optional_view(workspace, "workspace");
  o.num_splits = num_splits;
  o.num_threads = num_threads;
  o.stream = reinterpret_cast<void*>(stream);
  o.backend = backend_of(backend);
  return o;
}

}  // namespace

void bind_paged(nb::module_& m) {
  m.def("paged_attention",
        [](const s2attn::Pattern& pattern, InArray q, InArray k_pages, InArray v_pages, InArray block_table,
           InArray context_lens, OutArray out, std::optional<OutArray> lse, std::optional<float> scale,
           std::optional<InArray> cu_q, std::optional<OutArray> workspace, int num_splits, int num_threads,
           uintptr_t stream, const std::string& backend) {
          const auto o = paged_options(scale, cu_q, workspace, num_splits, num_threads, stream, backend);
          const auto kv = paged_kv(k_pages, v_pages, block_table, context_lens);
          const auto qv = view_of(q, "q"), ov = view_of(out, "out"), lv = optional_view(lse, "lse");
          nb::gil_scoped_release release;
          s2attn::paged_attention(pattern, qv, kv, ov, lv, o);
        },
        "pattern"_a, "q"_a, "k_pages"_a, "v_pages"_a, "block_table"_a, "context_lens"_a, "out"_a, "lse"_a.none(),
        "softmax_scale"_a.none(), "cu_seqlens_q"_a.none(), "workspace"_a.none(), "num_splits"_a = 0,
        "num_threads"_a = 0, "stream"_a = 0, "backend"_a = "auto");

  m.def("paged_plan",
        [](const s2attn::Pattern& pattern, InArray q, InArray k_pages, InArray v_pages, InArray block_table,
           InArray context_lens, std::optional<InArray> cu_q, int num_splits, const std::string& backend) {
          const auto o = paged_options(std::nullopt, cu_q, std::nullopt, num_splits, 0, 0, backend);
          const auto kv = paged_kv(k_pages, v_pages, block_table, context_lens);
          const auto qv = view_of(q, "q");
          const int splits = s2attn::paged_num_splits(pattern, qv, kv, o);
          const size_t bytes = s2attn::paged_workspace_size(pattern, qv, kv, o);
          return nb::make_tuple(splits, bytes);
        },
        "pattern"_a, "q"_a, "k_pages"_a, "v_pages"_a, "block_table"_a, "context_lens"_a, "cu_seqlens_q"_a.none(),
        "num_splits"_a = 0, "backend"_a = "auto");

  m.def("combine_partitions",
        [](std::vector<InArray> outs, std::vector<InArray> lses, OutArray out, std::optional<OutArray> lse,
           int num_threads, uintptr_t stream) {
          std::vector<s2attn::TensorView> ov, lv;
          for (const auto& a : outs) ov.push_back(view_of(a, "outs"));
          for (const auto& a : lses) lv.push_back(view_of(a, "lses"));
          const auto o = view_of(out, "out"), l = optional_view(lse, "lse");
          s2attn::CombineOptions opt;
          opt.num_threads = num_threads;
          opt.stream = reinterpret_cast<void*>(stream);
          nb::gil_scoped_release release;
          s2attn::combine_partitions(ov, lv, o, l, opt);
        },
        "outs"_a, "lses"_a, "out"_a, "lse"_a.none(), "num_threads"_a = 0, "stream"_a = 0);

  m.def("needed_key_blocks", &s2attn::needed_key_blocks, "pattern"_a, "kv_head"_a, "context_len"_a,
        "max_context_len"_a = 0);

  m.def("kv_cache_footprint",
        [](const s2attn::Pattern& pattern, int64_t context_len, int64_t page_size, int64_t head_dim,
           const std::string& dtype, int64_t max_context_len) {
          const s2attn::KVFootprint f =
              s2attn::kv_cache_footprint(pattern, context_len, page_size, head_dim, cache_dtype(dtype), max_context_len);
          nb::dict d;
          d["context_len"] = f.context_len;
          d["page_size"] = f.page_size;
          d["num_kv_heads"] = f.num_kv_heads;
          d["dense_pages"] = f.dense_pages;
          d["vllm_pages"] = f.vllm_pages;
          d["pages_per_kv_head"] = f.pages_per_kv_head;
          d["head_paged_pages"] = f.head_paged_pages;
          d["dense_bytes"] = f.dense_bytes;
          d["vllm_bytes"] = f.vllm_bytes;
          d["head_paged_bytes"] = f.head_paged_bytes;
          return d;
        },
        "pattern"_a, "context_len"_a, "page_size"_a, "head_dim"_a = 128, "dtype"_a = "bfloat16",
        "max_context_len"_a = 0);
}
