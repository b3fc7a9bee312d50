#include "api/checks.h"

namespace s2attn::checks {

std::string shape_str(const TensorView& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim; ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

std::string device_str(const Device& d) {
  return d.type == DeviceType::cpu ? "cpu" : "cuda:" + std::to_string(d.index);
}

void require_defined(const char* name, const TensorView& t) {
  if (!t.defined()) throw InvalidArgument(name, "a tensor (got none)");
  if (t.data == nullptr && t.numel() != 0) throw InvalidArgument(name, "a tensor (got none)");
  if (t.ndim < 1 || t.ndim > kMaxDims) throw InvalidArgument(name, "a tensor of rank 1..4");
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0 || t.stride[i] < 0) throw InvalidArgument(name, "non-negative sizes and strides");
  }
}

void require_device(const char* name, const TensorView& t, const Device& dev) {
  if (t.device != dev) {
    throw InvalidArgument(name, "on the same device as q (" + device_str(dev) + "), got " + device_str(t.device));
  }
}

void require_dtype(const char* name, const TensorView& t, DType want, const char* what) {
  if (t.dtype != want) {
    throw DTypeMismatch(name, std::string("dtype ") + dtype_name(want) + what + ", got " + dtype_name(t.dtype));
  }
}

void require_shape(const char* name, const TensorView& t, std::initializer_list<int64_t> shape) {
  bool ok = t.ndim == static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) ok = ok && t.shape[i++] == s;
  if (!ok) {
    std::string want = "[";
    i = 0;
    for (int64_t s : shape) want += (i++ ? ", " : "") + std::to_string(s);
    throw InvalidArgument(name, "shape " + want + "], got " + shape_str(t));
  }
}

void require_last_contiguous(const char* name, const TensorView& t) {
  if (t.ndim > 0 && t.shape[t.ndim - 1] > 1 && t.stride[t.ndim - 1] != 1) {
    throw InvalidArgument(name, "a contiguous last (head-dim) dimension (stride 1), got stride " +
                                    std::to_string(t.stride[t.ndim - 1]));
  }
}

}  // namespace s2attn::checks
