// DLPack arrays (nanobind ndarrays) -> s2attn::TensorView, shared by the binding's translation units:
// numpy arrays and torch tensors of any framework version are viewed without copies.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <string>

#include "s2attn/s2attn.h"

namespace s2attn::python {

namespace nb = nanobind;

using InArray = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

inline s2attn::DType dtype_of(const nb::dlpack::dtype& t, const char* name) {
  using nb::dlpack::dtype_code;
  const auto code = static_cast<dtype_code>(t.code);
  if (t.lanes == 1) {
    if (code == dtype_code::Float && t.bits == 32) return s2attn::DType::f32;
    if (code == dtype_code::Float && t.bits == 16) return s2attn::DType::f16;
    if (code == dtype_code::Bfloat && t.bits == 16) return s2attn::DType::bf16;
    if (code == dtype_code::Float && t.bits == 64) return s2attn::DType::f64;
    if (code == dtype_code::Int && t.bits == 32) return s2attn::DType::i32;
    if (code == dtype_code::Int && t.bits == 64) return s2attn::DType::i64;
    if (code == dtype_code::UInt && t.bits == 8) return s2attn::DType::u8;
    if (code == dtype_code::Int && t.bits == 8) return s2attn::DType::u8;  // workspace bytes (torch.int8)
    if (code == dtype_code::Bool && t.bits == 8) return s2attn::DType::b8;
    // uint16 carries bf16 payloads from numpy + ml_dtypes (numpy has no DLPack bf16). Only the Python
    // layer calls this module, and it refuses genuine uint16 arrays before they get here.
    if (code == dtype_code::UInt && t.bits == 16) return s2attn::DType::bf16;
  }
  throw s2attn::DTypeMismatch(name, "a float32, float16 or bfloat16 array, got an unsupported dtype (code " +
                                        std::to_string(t.code) + ", " + std::to_string(t.bits) + " bits)");
}

template <typename Array>
s2attn::TensorView view_of(const Array& a, const char* name) {
  if (a.ndim() > static_cast<size_t>(s2attn::kMaxDims)) {
    throw s2attn::InvalidArgument(name, "at most 4 dimensions, got " + std::to_string(a.ndim()));
  }
  s2attn::TensorView t;
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.dtype = dtype_of(a.dtype(), name);
  const int dev = a.device_type();
  if (dev == nb::device::cpu::value) {
    t.device = {s2attn::DeviceType::cpu, 0};
  } else if (dev == nb::device::cuda::value) {
    t.device = {s2attn::DeviceType::cuda, a.device_id()};
  } else {
    throw s2attn::InvalidArgument(name, "a CPU or CUDA array, got DLPack device type " + std::to_string(dev));
  }
  t.ndim = static_cast<int32_t>(a.ndim());
  for (size_t i = 0; i < a.ndim(); ++i) {
    t.shape[i] = a.shape(i);
    t.stride[i] = a.stride(i);
  }
  return t;
}

template <typename Array>
s2attn::TensorView optional_view(const std::optional<Array>& a, const char* name) {
  return a ? view_of(*a, name) : s2attn::TensorView{};
}

inline s2attn::Backend backend_of(const std::string& name) {
  if (name == "auto") return s2attn::Backend::automatic;
  if (name == "cpu") return s2attn::Backend::cpu;
  if (name == "cuda_sm80") return s2attn::Backend::cuda_sm80;
  if (name == "cuda_sm90") return s2attn::Backend::cuda_sm90;
  throw s2attn::InvalidArgument("backend", "one of 'auto', 'cpu', 'cuda_sm80', 'cuda_sm90', got '" + name + "'");
}

}  // namespace s2attn::python
