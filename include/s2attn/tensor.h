// Non-owning tensor views: what the C++ API and every backend take. Strides are in elements, so the
// bshd, bhsd and Megatron sbhd layouts are all the same logical [B, S, H, D] view with different strides.
#pragma once
#include <cstdint>
#include <string>

namespace s2attn {

enum class DType : int32_t { f32 = 0, f16 = 1, bf16 = 2, f64 = 3, i32 = 4, i64 = 5, u8 = 6, b8 = 7 };
enum class DeviceType : int32_t { cpu = 0, cuda = 1 };

struct Device {
  DeviceType type = DeviceType::cpu;
  int32_t index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

constexpr int kMaxDims = 4;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device{};
  int32_t ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  int64_t stride[kMaxDims] = {0, 0, 0, 0};

  bool defined() const { return data != nullptr || ndim > 0; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
};

// A contiguous (row-major) view over `data`.
TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                     Device device = Device{});

const char* dtype_name(DType t);
int dtype_size(DType t);
std::string describe(const TensorView& t);  // "bf16[2, 128, 8, 64] strides [..] on cpu"

}  // namespace s2attn
