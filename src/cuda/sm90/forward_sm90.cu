// The Hopper path's front: forward_sm90_supports (what the sm_90a kernels can serve; the dispatcher falls
// back to the portable path otherwise), the TMA descriptors (encoded on the host per call: no allocation,
// no synchronisation), the persistent grid and the variant dispatch.
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include <cutlass/numeric_types.h>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/common/host_math.h"
#include "cuda/common/stream_scratch.h"
#include "cuda/cuda_backend.h"
#include "cuda/sm90/forward_sm90.h"
#include "cuda/sm90/tensor_map_sm90.h"
#include "cuda/sm90/variants_sm90.h"
#include "s2attn/errors.h"

namespace s2attn::cuda {
namespace {

constexpr int kBlockM = 128;  // ForwardTraitsSm90::kBlockM

template <typename Elem, int kHeadDim>
void run_if_built(const ForwardParamsSm90& fp, const ForwardLaunchSm90& launch) {
  // a variant that is not built is never dispatched to (variant_built is false): no reference is emitted
  if constexpr (variant_built_sm90_v<Elem, kHeadDim>()) {
    run_forward_sm90<Elem, kHeadDim>(fp, launch);
  } else {
    (void)fp;
    (void)launch;
    throw Unsupported("this Hopper forward variant is not built (S2ATTN_SM90_VARIANTS)");
  }
}

}  // namespace

bool static_schedule_forced_sm90() {
  const char* v = std::getenv("S2ATTN_SM90_STATIC_SCHEDULE");
  return v != nullptr && v[0] == '1';
}

bool forward_sm90_supports(const AttentionParams& p) {
  if (p.pattern.use_mask) return false;  // block masks: the portable path walks their device lists
  if (p.dtype != DType::bf16 && p.dtype != DType::f16) return false;
  if (p.head_dim != 64 && p.head_dim != 128) return false;
  if (!variant_built_sm90(p.dtype, p.head_dim)) return false;
  if (p.pattern.block_size != 64 && p.pattern.block_size != 128) return false;
  if (p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0) return false;
  if (p.q_offset >= kMaxKernelPosition || p.q_offset + p.seqlen_q >= kMaxKernelPosition) return false;
  if (int64_t(p.seqlen_q) + p.seqlen_k >= kMaxKernelPosition) return false;
  // 32-bit work-unit indices in the scheduler (units + one grid of overshoot)
  const int64_t tiles_ub = (int64_t(p.seqlen_q) + kBlockM - 1) / kBlockM + 1;
  if ((tiles_ub * p.batch + 1) * p.num_heads + 4096 >= (int64_t(1) << 31)) return false;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int64_t batch = varlen ? 1 : p.batch;
  return tma_ok_sm90(p.q, p.q_stride, batch, p.seqlen_q, p.num_heads) &&
         tma_ok_sm90(p.k, p.k_stride, batch, p.seqlen_k, p.num_kv_heads) &&
         tma_ok_sm90(p.v, p.v_stride, batch, p.seqlen_k, p.num_kv_heads) &&
         rows_ok_sm90(p.out, p.out_stride, batch, p.seqlen_q, p.num_heads);
}

QueryTileGridSm90 query_tile_grid_sm90(const AttentionParams& p, int sms) {
  // Units: (sequence, head, query tile). Dense batch: exact; varlen: an upper bound (tiles of each sequence
  // are counted on the device) used only to size the grid.
  const bool varlen = p.cu_seqlens_q != nullptr;
  int64_t tiles;
  if (varlen) {
    tiles = (int64_t(p.seqlen_q) + kBlockM - 1) / kBlockM + p.batch;  // + 1 per sequence for unaligned offsets
  } else {
    const int64_t off = p.q_offset >= 0 ? p.q_offset : int64_t(p.seqlen_k) - p.seqlen_q;
    tiles = p.batch * (floor_div64(off + p.seqlen_q - 1, kBlockM) - floor_div64(off, kBlockM) + 1);
  }
  const int64_t units = tiles * p.num_heads;
  QueryTileGridSm90 tg;
  tg.units = units;
  tg.grid = static_cast<int>(units < sms ? units : sms);
  // Heads per scheduling group: about two waves of units per group (tile_scheduler_sm90.cuh).
  const int64_t tiles_per_seq = (tiles + p.batch - 1) / p.batch;
  int64_t hg = (2 * int64_t(sms) + tiles_per_seq - 1) / tiles_per_seq;
  // S2ATTN_SM90_HEAD_GROUP=n (read per call): n heads per group instead, to A/B the group size
  // (tools/env_ab.py); the 8k forward's tail depends on the last group's size
  if (const char* v = std::getenv("S2ATTN_SM90_HEAD_GROUP")) {
    const long n = std::strtol(v, nullptr, 10);
    if (n > 0) hg = n;
  }
  tg.head_group = static_cast<int>(hg < 1 ? 1 : (hg > p.num_heads ? p.num_heads : hg));
  return tg;
}

void forward_sm90(const AttentionParams& p) {
  if (!forward_sm90_supports(p)) {
    throw Unsupported("the Hopper path has no forward kernel for this dtype / head dim / block size / pattern");
  }
  if (p.batch <= 0 || p.seqlen_q <= 0) return;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int64_t batch = varlen ? 1 : p.batch;  // varlen: one packed sequence of seqlen_q (= total) tokens
  const CUtensorMapDataType dt =
      p.dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;

  ForwardLaunchSm90 launch;
  launch.device = device_of(p.q, "q");
  launch.stream = static_cast<cudaStream_t>(p.stream);
  DeviceGuard guard(launch.device);

  ForwardParamsSm90 fp;
  fp.p = p;
  fp.tma_q = make_tensor_map_sm90(p.q, dt, batch, p.seqlen_q, p.num_heads, p.head_dim, p.q_stride);
  fp.tma_k = make_tensor_map_sm90(p.k, dt, batch, p.seqlen_k, p.num_kv_heads, p.head_dim, p.k_stride);
  fp.tma_v = make_tensor_map_sm90(p.v, dt, batch, p.seqlen_k, p.num_kv_heads, p.head_dim, p.v_stride);

  const QueryTileGridSm90 tg = query_tile_grid_sm90(p, sm_count_sm90(launch.device));
  launch.grid = tg.grid;
  fp.head_group = tg.head_group;
  if (launch.grid <= 0) return;
  // Four waves of units or more: each CTA takes its next unit from a counter when it starts one
  // (tile_scheduler_sm90.cuh); 4 bytes of stream-ordered scratch, zeroed before the launch. Measured at 15+
  // waves (8k: -1.5 to -1.9%); below four waves the allocation and the memset (~2 us in the stream) would
  // weigh more against a short kernel, for a tail that a few units cannot make long.
  std::optional<StreamScratch> counter;
  if (tg.units >= 4 * int64_t(tg.grid) && !static_schedule_forced_sm90()) {
    counter.emplace(sizeof(int), launch.stream);
    S2_CUDA_CHECK(cudaMemsetAsync(counter->get(), 0, sizeof(int), launch.stream));
    fp.unit_counter = static_cast<int*>(counter->get());
  }

  if (p.dtype == DType::bf16) {
    if (p.head_dim == 128) {
      run_if_built<cutlass::bfloat16_t, 128>(fp, launch);
    } else {
      run_if_built<cutlass::bfloat16_t, 64>(fp, launch);
    }
  } else {
    if (p.head_dim == 128) {
      run_if_built<cutlass::half_t, 128>(fp, launch);
    } else {
      run_if_built<cutlass::half_t, 64>(fp, launch);
    }
  }
}

}  // namespace s2attn::cuda
