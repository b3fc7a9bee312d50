#include "s2attn/tensor.h"

#include <sstream>

#include "s2attn/errors.h"

namespace s2attn {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
    case DType::b8: return "bool";
  }
  return "unknown";
}

int dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::i32: return 4;
    case DType::f16: case DType::bf16: return 2;
    case DType::f64: case DType::i64: return 8;
    case DType::u8: case DType::b8: return 1;
  }
  return 0;
}

TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device) {
  if (shape.size() > static_cast<size_t>(kMaxDims)) {
    throw InvalidArgument("shape", "at most " + std::to_string(kMaxDims) + " dimensions");
  }
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.stride[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

std::string describe(const TensorView& t) {
  std::ostringstream os;
  os << dtype_name(t.dtype) << "[";
  for (int i = 0; i < t.ndim; ++i) os << (i ? ", " : "") << t.shape[i];
  os << "] strides [";
  for (int i = 0; i < t.ndim; ++i) os << (i ? ", " : "") << t.stride[i];
  os << "] on " << (t.device.type == DeviceType::cpu ? "cpu" : "cuda:" + std::to_string(t.device.index));
  return os.str();
}

}  // namespace s2attn
