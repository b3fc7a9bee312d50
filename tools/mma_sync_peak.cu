// The tensor-core ceiling of the portable path's instruction: mma.sync m16n8k16 bf16 -> fp32, issued back to
// back from registers (no loads) by 32 warps on every SM, in bursts of a few milliseconds (below the power
// cap's reaction: an upper bound for a kernel that also loads its operands). Issue 4 asks the portable
// (sm_80) kernels for 1.3x FlexAttention's speed on the H100; this bounds what any mma.sync kernel can
// reach there. Prints one JSON line.
//
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -o /tmp/mma_sync_peak tools/mma_sync_peak.cu
//   /tmp/mma_sync_peak [iterations]
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define CHECK(call)                                                                              \
  do {                                                                                           \
    cudaError_t e_ = (call);                                                                     \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

constexpr int kChains = 8;  // independent accumulators a warp: enough to cover the MMA latency

__global__ void mma_sync_loop(int iterations, float* sink) {
  uint32_t a[4], b[2];
  // finite bf16 pairs of small magnitude (0x3c00 is 2^-7 in bf16), the low bits varying with the lane; the
  // same every iteration (constant operands draw less power than real data: one more reason this is an
  // upper bound)
  for (int i = 0; i < 4; ++i) a[i] = 0x3c003c00u ^ (threadIdx.x * 7u + i);
  for (int i = 0; i < 2; ++i) b[i] = 0x3c003c00u ^ (threadIdx.x * 3u + i);
  float c[kChains][4] = {};
  for (int it = 0; it < iterations; ++it) {
#pragma unroll
    for (int k = 0; k < kChains; ++k) {
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%0,%1,%2,%3};\n"
          : "+f"(c[k][0]), "+f"(c[k][1]), "+f"(c[k][2]), "+f"(c[k][3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
  }
  float s = 0.f;
  for (int k = 0; k < kChains; ++k) s += c[k][0] + c[k][1] + c[k][2] + c[k][3];
  if (s == 123.456f) sink[threadIdx.x] = s;  // keeps the loop alive; never true in practice
}

int main(int argc, char** argv) {
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 20000;
  int device = 0, sms = 0, clock_khz = 0;
  CHECK(cudaGetDevice(&device));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device));
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, device));
  float* sink = nullptr;
  CHECK(cudaMalloc(&sink, 1024 * sizeof(float)));
  const int threads = 256, blocks = sms * 4;  // 32 warps an SM: 8 a scheduler
  mma_sync_loop<<<blocks, threads>>>(100, sink);  // warm-up
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  float best_ms = 1e30f;
  for (int rep = 0; rep < 5; ++rep) {
    CHECK(cudaEventRecord(start));
    mma_sync_loop<<<blocks, threads>>>(iterations, sink);
    CHECK(cudaGetLastError());
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0.f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (ms < best_ms) best_ms = ms;
  }
  const double flops = 2.0 * 16 * 8 * 16 * double(kChains) * iterations * (threads / 32) * double(blocks);
  std::printf(
      "{\"gpu\": \"%s\", \"sms\": %d, \"max_clock_mhz\": %d, \"instruction\": "
      "\"mma.sync.m16n8k16.bf16.f32\", \"iterations\": %d, \"best_ms\": %.4f, \"tflops\": %.1f}\n",
      prop.name, sms, clock_khz / 1000, iterations, best_ms, flops / (best_ms * 1e-3) / 1e12);
  CHECK(cudaFree(sink));
  return 0;
}
