// Per-thread fp32 scratch for the CPU kernels: one growing buffer per thread, carved into 64-byte aligned
// arrays at the start of a task, so the per-block loops never allocate.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace s2attn::cpu {

class Scratch {
 public:
  // Points each *first at an array of `second` floats (contents unspecified), growing the buffer if needed.
  // Invalidates the arrays of the previous carve.
  void carve(std::initializer_list<std::pair<float**, size_t>> arrays) {
    size_t total = kAlignFloats;  // slack to align the base
    for (const auto& a : arrays) total += padded(a.second);
    if (buf_.size() < total) buf_.resize(total);
    const uintptr_t base = reinterpret_cast<uintptr_t>(buf_.data());
    float* p = buf_.data() + (kAlignBytes - base % kAlignBytes) % kAlignBytes / sizeof(float);
    for (const auto& a : arrays) {
      *a.first = p;
      p += padded(a.second);
    }
  }

 private:
  static constexpr size_t kAlignBytes = 64;
  static constexpr size_t kAlignFloats = kAlignBytes / sizeof(float);
  static size_t padded(size_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

  std::vector<float> buf_;
};

// This thread's scratch, shared by every kernel (one task at a time per thread).
inline Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace s2attn::cpu
