// Python binding through DLPack (nanobind ndarrays): numpy arrays and torch tensors of any framework
// version are viewed without copies, never built against. Thin: converts arguments, calls the C++ API.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "python/views.h"
#include "s2attn/s2attn.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using namespace s2attn::python;

s2attn::AttentionOptions make_options(std::optional<float> scale, const std::optional<InArray>& cu_q,
                                      const std::optional<InArray>& cu_k, std::optional<int64_t> q_offset,
                                      int num_threads, bool deterministic, uintptr_t stream,
                                      const std::string& backend) {
  s2attn::AttentionOptions o;
  o.backend = backend_of(backend);
  o.softmax_scale = scale;
  o.cu_seqlens_q = optional_view(cu_q, "cu_seqlens_q");
  o.cu_seqlens_k = optional_view(cu_k, "cu_seqlens_k");
  o.q_offset = q_offset;
  o.num_threads = num_threads;
  o.deterministic = deterministic;
  o.stream = reinterpret_cast<void*>(stream);
  return o;
}

nb::ndarray<nb::numpy, uint8_t> numpy_u8(std::vector<uint8_t>&& bytes, std::initializer_list<size_t> shape) {
  auto* owned = new std::vector<uint8_t>(std::move(bytes));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<uint8_t>*>(p); });
  std::vector<size_t> dims(shape);
  return nb::ndarray<nb::numpy, uint8_t>(owned->data(), dims.size(), dims.data(), owner);
}

// Raise the Python class of s2attn._errors that matches the C++ exception, with `.argument` set.
void translate(const std::exception_ptr& p, void*) {
  auto raise = [](const char* cls_name, const std::string& msg, const std::string* argument) {
    nb::object cls = nb::module_::import_("s2attn._errors").attr(cls_name);
    nb::object exc = cls(msg);
    if (argument) exc.attr("argument") = *argument;
    PyErr_SetObject(cls.ptr(), exc.ptr());
  };
  try {
    std::rethrow_exception(p);
  } catch (const s2attn::DTypeMismatch& e) {
    raise("DTypeError", e.what(), &e.argument());
  } catch (const s2attn::InvalidArgument& e) {
    raise("InvalidArgumentError", e.what(), &e.argument());
  } catch (const s2attn::Unsupported& e) {
    raise("UnsupportedError", e.what(), nullptr);
  } catch (const s2attn::DeviceError& e) {
    raise("DeviceError", e.what(), nullptr);
  } catch (const s2attn::Error& e) {
    raise("S2AttnError", e.what(), nullptr);
  }
}

}  // namespace

void bind_paged(nb::module_& m);  // binding_paged.cpp

NB_MODULE(_s2attn, m) {
  m.doc() = "s2attn native extension (use the s2attn package, not this module)";
  nb::register_exception_translator(translate);

  nb::enum_<s2attn::VertPosition>(m, "VertPosition")
      .value("absolute", s2attn::VertPosition::absolute)
      .value("relative", s2attn::VertPosition::relative);

  nb::class_<s2attn::Pattern>(m, "Pattern")
      .def_prop_ro("block_size", &s2attn::Pattern::block_size)
      .def_prop_ro("causal", &s2attn::Pattern::causal)
      .def_prop_ro("num_heads", &s2attn::Pattern::num_heads)
      .def_prop_ro("num_kv_heads", &s2attn::Pattern::num_kv_heads)
      .def_prop_ro("is_block_mask", [](const s2attn::Pattern& p) { return p.mask() != nullptr; })
      .def("attends", &s2attn::Pattern::attends, "h"_a, "i"_a, "j"_a)
      .def("prepare",  // block masks: copy the lists to CUDA device `device_index` once (before graph capture)
           [](const s2attn::Pattern& p, int device_index) {
             p.prepare(s2attn::Device{s2attn::DeviceType::cuda, device_index});
           },
           "device_index"_a)
      .def("with_sink", [](const s2attn::Pattern& p, int n) { return s2attn::Pattern(p).with_sink(n); },
           "blocks"_a)
      .def("with_dense_prefix",
           [](const s2attn::Pattern& p, int n) { return s2attn::Pattern(p).with_dense_prefix(n); }, "blocks"_a)
      .def("with_range",
           [](const s2attn::Pattern& p, int begin, int end, int stride, bool relative) {
             s2attn::RangeRule r;
             r.begin = begin;
             r.end = end;
             r.stride = stride;
             r.relative = relative ? 1 : 0;
             return s2attn::Pattern(p).with_range(r);
           },
           "begin"_a, "end"_a, "stride"_a = 1, "relative"_a = false)
      .def("with_dense_heads",
           [](const s2attn::Pattern& p, const std::vector<int>& heads) {
             return s2attn::Pattern(p).with_dense_heads(heads);
           },
           "heads"_a)
      .def("to_block_mask",
           [](const s2attn::Pattern& p, int nq, std::optional<int> nk, int q_first) {
             const int cols = nk.value_or(q_first + nq);
             return numpy_u8(p.to_block_mask(nq, cols, q_first),
                             {size_t(p.num_heads()), size_t(nq), size_t(cols)});
           },
           "nq_blocks"_a, "nk_blocks"_a = nb::none(), "q_first_block"_a = 0)
      .def("visible_blocks", &s2attn::Pattern::visible_blocks, "seqlen_q"_a, "seqlen_k"_a)
      .def("density",
           [](const s2attn::Pattern& p, int64_t sq, std::optional<int64_t> sk) {
             return p.density(sq, sk.value_or(sq));
           },
           "seqlen_q"_a, "seqlen_k"_a = nb::none());

  m.def("local_stride",
        [](int num_heads, int block_size, int local_blocks, int vert_stride, bool causal, bool homo_head,
           std::optional<int> head_sliding_step, int head_sliding_offset, int num_dense_heads,
           std::optional<int> num_kv_heads, bool per_q_head, std::optional<int> local_right,
           std::optional<s2attn::VertPosition> vert_position) {
          s2attn::LocalStrideParams a;
          a.num_heads = num_heads;
          a.block_size = block_size;
          a.local_blocks = local_blocks;
          a.vert_stride = vert_stride;
          a.causal = causal;
          a.homo_head = homo_head;
          a.head_sliding_step = head_sliding_step;
          a.head_sliding_offset = head_sliding_offset;
          a.num_dense_heads = num_dense_heads;
          a.num_kv_heads = num_kv_heads;
          a.per_q_head = per_q_head;
          a.local_right = local_right;
          a.vert_position = vert_position;
          return s2attn::Pattern::local_stride(a);
        },
        "num_heads"_a, "block_size"_a, "local_blocks"_a, "vert_stride"_a, "causal"_a, "homo_head"_a,
        "head_sliding_step"_a.none(), "head_sliding_offset"_a, "num_dense_heads"_a, "num_kv_heads"_a.none(),
        "per_q_head"_a, "local_right"_a.none(), "vert_position"_a.none());

  m.def("dense", &s2attn::Pattern::dense, "num_heads"_a, "block_size"_a, "causal"_a, "num_kv_heads"_a.none());

  m.def("block_mask_pattern",
        [](nb::ndarray<nb::ro, uint8_t, nb::ndim<3>, nb::c_contig, nb::device::cpu> mask, int num_heads,
           int block_size, bool causal, std::optional<int> num_kv_heads) {
          if (mask.shape(0) > INT32_MAX || mask.shape(1) > INT32_MAX || mask.shape(2) > INT32_MAX) {
            throw s2attn::InvalidArgument("mask", "extents below 2^31");
          }
          return s2attn::Pattern::from_block_mask(mask.data(), int(mask.shape(0)), int(mask.shape(1)),
                                                  int(mask.shape(2)), num_heads, block_size, causal,
                                                  num_kv_heads);
        },
        "mask"_a, "num_heads"_a, "block_size"_a, "causal"_a, "num_kv_heads"_a.none());

  m.def("forward",
        [](const s2attn::Pattern& pattern, InArray q, InArray k, InArray v, OutArray out,
           std::optional<OutArray> lse, std::optional<float> scale, std::optional<InArray> cu_q,
           std::optional<InArray> cu_k, std::optional<int64_t> q_offset, int num_threads, uintptr_t stream,
           const std::string& backend) {
          const auto o = make_options(scale, cu_q, cu_k, q_offset, num_threads, false, stream, backend);
          const auto qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v");
          const auto ov = view_of(out, "out"), lv = optional_view(lse, "lse");
          nb::gil_scoped_release release;
          s2attn::forward(pattern, qv, kv, vv, ov, lv, o);
        },
        "pattern"_a, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a.none(), "softmax_scale"_a.none(),
        "cu_seqlens_q"_a.none(), "cu_seqlens_k"_a.none(), "q_offset"_a.none(), "num_threads"_a = 0,
        "stream"_a = 0, "backend"_a = "auto");

  m.def("backward",
        [](const s2attn::Pattern& pattern, InArray q, InArray k, InArray v, InArray out, InArray lse,
           InArray dout, OutArray dq, OutArray dk, OutArray dv, std::optional<float> scale,
           std::optional<InArray> cu_q, std::optional<InArray> cu_k, std::optional<int64_t> q_offset,
           bool deterministic, int num_threads, uintptr_t stream, const std::string& backend,
           std::optional<OutArray> workspace) {
          auto o = make_options(scale, cu_q, cu_k, q_offset, num_threads, deterministic, stream, backend);
          o.workspace = optional_view(workspace, "workspace");
          const auto qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v");
          const auto ov = view_of(out, "out"), lv = view_of(lse, "lse"), dov = view_of(dout, "dout");
          const auto dqv = view_of(dq, "dq"), dkv = view_of(dk, "dk"), dvv = view_of(dv, "dv");
          nb::gil_scoped_release release;
          s2attn::backward(pattern, qv, kv, vv, ov, lv, dov, dqv, dkv, dvv, o);
        },
        "pattern"_a, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "dout"_a, "dq"_a, "dk"_a, "dv"_a,
        "softmax_scale"_a.none(), "cu_seqlens_q"_a.none(), "cu_seqlens_k"_a.none(), "q_offset"_a.none(),
        "deterministic"_a = false, "num_threads"_a = 0, "stream"_a = 0, "backend"_a = "auto",
        "workspace"_a.none() = nb::none());

  m.def("backward_workspace_size",
        [](const s2attn::Pattern& pattern, InArray q, InArray k, InArray v, std::optional<InArray> cu_q,
           std::optional<InArray> cu_k, std::optional<int64_t> q_offset, bool deterministic,
           const std::string& backend) {
          const auto o = make_options(std::nullopt, cu_q, cu_k, q_offset, 0, deterministic, 0, backend);
          const auto qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v");
          return s2attn::backward_workspace_size(pattern, qv, kv, vv, o);
        },
        "pattern"_a, "q"_a, "k"_a, "v"_a, "cu_seqlens_q"_a.none(), "cu_seqlens_k"_a.none(), "q_offset"_a.none(),
        "deterministic"_a = false, "backend"_a = "auto");

  m.def("backend_available",
        [](const std::string& name) {
          if (name == "cpu") return s2attn::backend_available(s2attn::Backend::cpu);
          if (name == "cuda_sm80") return s2attn::backend_available(s2attn::Backend::cuda_sm80);
          if (name == "cuda_sm90") return s2attn::backend_available(s2attn::Backend::cuda_sm90);
          throw s2attn::InvalidArgument("backend", "one of 'cpu', 'cuda_sm80', 'cuda_sm90', got '" + name + "'");
        },
        "name"_a);
  bind_paged(m);
}
