// The Hopper path's front: forward_sm90_supports (what the sm_90a kernels can serve; the dispatcher falls
// back to the portable path otherwise), the TMA descriptors (encoded on the host per call: no allocation,
// no synchronisation), the persistent grid and the variant dispatch.
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>

#include <cutlass/numeric_types.h>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device.h"
#include "cuda/common/host_math.h"
#include "cuda/common/stream_scratch.h"
#include "cuda/common/tma_map.h"
#include "cuda/cuda_backend.h"
#include "cuda/sm90/forward_sm90.h"
#include "cuda/sm90/tensor_map_sm90.h"
#include "cuda/sm90/variants_sm90.h"
#include "inference/cuda/paged_tma.h"
#include "inference/paged_params.h"
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

// The persistent grid over `tiles` query tiles (all sequences; exact or an upper bound) of `heads` heads, and
// the heads per scheduling group: about two waves of units per group (tile_scheduler_sm90.cuh), rounded up to
// a divisor of `heads` (at most twice the target) so that the groups are equal. A short last group (H = 32 at
// 8k: target 5, groups 5,5,5,5,5,5,2) cost 3-5% against any equal split (groups of 2, 4 or 8 all measured
// alike; env_ab_head_group_*_2026-12-06_s12.json).
QueryTileGridSm90 query_tile_grid_of(int64_t tiles, int batch, int heads, int sms) {
  QueryTileGridSm90 tg;
  tg.units = tiles * heads;
  tg.grid = static_cast<int>(tg.units < sms ? tg.units : sms);
  const int64_t tiles_per_seq = std::max<int64_t>(1, (tiles + batch - 1) / batch);
  int64_t hg = (2 * int64_t(sms) + tiles_per_seq - 1) / tiles_per_seq;
  for (int64_t d = hg; d < heads && d <= 2 * hg; ++d) {
    if (heads % d == 0) {
      hg = d;
      break;
    }
  }
  // S2ATTN_SM90_HEAD_GROUP=n (read per call): n heads per group instead, to A/B the group size
  // (tools/env_ab.py); the 8k forward's tail depends on the last group's size
  if (const char* v = std::getenv("S2ATTN_SM90_HEAD_GROUP")) {
    const long n = std::strtol(v, nullptr, 10);
    if (n > 0) hg = n;
  }
  tg.head_group = static_cast<int>(hg < 1 ? 1 : (hg > heads ? heads : hg));
  return tg;
}

// Sets fp's persistent grid and schedule from tg and launches the (dtype, head dim) variant. Four waves of
// units or more: each CTA takes its next unit from a counter when it starts one (tile_scheduler_sm90.cuh);
// 4 bytes of stream-ordered scratch, zeroed before the launch. Measured at 15+ waves (8k: -1.5 to -1.9%);
// below four waves the allocation and the memset (~2 us in the stream) would weigh more against a short
// kernel, for a tail that a few units cannot make long.
void launch_forward(ForwardParamsSm90& fp, ForwardLaunchSm90& launch, const QueryTileGridSm90& tg) {
  launch.grid = tg.grid;
  fp.head_group = tg.head_group;
  if (launch.grid <= 0) return;
  std::optional<StreamScratch> counter;
  if (tg.units >= 4 * int64_t(tg.grid) && !static_schedule_forced_sm90()) {
    counter.emplace(sizeof(int), launch.stream);
    S2_CUDA_CHECK(cudaMemsetAsync(counter->get(), 0, sizeof(int), launch.stream));
    fp.unit_counter = static_cast<int*>(counter->get());
  }
  const bool d128 = fp.p.head_dim == 128;
  if (fp.p.dtype == DType::bf16) {
    d128 ? run_if_built<cutlass::bfloat16_t, 128>(fp, launch) : run_if_built<cutlass::bfloat16_t, 64>(fp, launch);
  } else {
    d128 ? run_if_built<cutlass::half_t, 128>(fp, launch) : run_if_built<cutlass::half_t, 64>(fp, launch);
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
  return query_tile_grid_of(tiles, p.batch, p.num_heads, sms);
}

namespace {

// The forward's view of a paged prefill call: queries, outputs and pattern as they are; K and V the pages
// (reached through fp.paged); per-sequence key lengths from the context lengths on the device.
AttentionParams paged_as_forward(const PagedParams& pp) {
  AttentionParams a;
  a.q = pp.q;
  a.k = pp.k_pages;
  a.v = pp.v_pages;
  a.out = pp.out;
  a.lse = pp.lse;
  a.q_stride = pp.q_stride;
  a.out_stride = pp.out_stride;
  a.lse_stride = pp.lse_stride;
  a.dtype = pp.dtype;
  a.batch = pp.batch;
  a.num_heads = pp.num_heads;
  a.num_kv_heads = pp.num_kv_heads;
  a.head_dim = pp.head_dim;
  a.seqlen_q = pp.cu_seqlens_q != nullptr ? pp.total_q : pp.q_len;  // varlen: the packed rows (TMA extent)
  a.seqlen_k = static_cast<int32_t>(std::min<int64_t>(int64_t(pp.max_pages) * pp.page_size, INT32_MAX));
  a.cu_seqlens_q = pp.cu_seqlens_q;
  a.scale = pp.scale;
  a.pattern = pp.pattern;
  a.stream = pp.stream;
  return a;
}

bool page_strides_ok(const void* base, int64_t page_stride, int64_t token_stride, int64_t head_stride) {
  auto ok = [](int64_t s) { return s >= 0 && s % 8 == 0 && s < (int64_t(1) << 38); };
  return (reinterpret_cast<uintptr_t>(base) & 15) == 0 && ok(page_stride) && ok(token_stride) && ok(head_stride);
}

}  // namespace

bool paged_prefill_sm90_supports(const PagedParams& pp) {
  if (pp.num_splits > 1 || pp.pattern.use_mask) return false;
  if (pp.page_size < 64 || (pp.page_size & (pp.page_size - 1)) != 0 || pp.num_pages <= 0) return false;
  if (!page_strides_ok(pp.k_pages, pp.k_page_stride, pp.k_token_stride, pp.k_head_stride) ||
      !page_strides_ok(pp.v_pages, pp.v_page_stride, pp.v_token_stride, pp.v_head_stride)) {
    return false;
  }
  AttentionParams a = paged_as_forward(pp);
  if (pp.cu_seqlens_q == nullptr && pp.q_len <= 0) return false;
  // forward_sm90_supports checks the rest on the queries and outputs (K and V stand in for themselves there:
  // their TMA rule is checked above), and that the positions fit: max context + q_len below 2^30
  a.k = a.q;
  a.v = a.q;
  a.k_stride = a.q_stride;
  a.v_stride = a.q_stride;
  a.num_kv_heads = pp.num_kv_heads;
  a.seqlen_k = a.seqlen_q;
  if (int64_t(pp.max_pages) * pp.page_size + pp.q_len >= kMaxKernelPosition) return false;
  return forward_sm90_supports(a);
}

void paged_prefill_sm90(const PagedParams& pp) {
  if (!paged_prefill_sm90_supports(pp)) {
    throw Unsupported("the Hopper forward does not serve this paged prefill (pages, pattern or operands)");
  }
  if (pp.batch <= 0 || pp.total_q <= 0) return;
  const AttentionParams p = paged_as_forward(pp);
  const bool varlen = p.cu_seqlens_q != nullptr;
  const CUtensorMapDataType dt = tma_dtype_16bit(p.dtype);

  ForwardLaunchSm90 launch;
  launch.device = pp.device;
  launch.stream = static_cast<cudaStream_t>(p.stream);
  DeviceGuard guard(launch.device);

  ForwardParamsSm90 fp;
  fp.p = p;
  fp.tma_q = make_tensor_map_sm90(p.q, dt, varlen ? 1 : p.batch, varlen ? pp.total_q : p.seqlen_q, p.num_heads,
                                  p.head_dim, p.q_stride);
  fp.tma_k = paged_kv_tma_map(pp, pp.k_pages, pp.k_page_stride, pp.k_token_stride, pp.k_head_stride, 64);
  fp.tma_v = paged_kv_tma_map(pp, pp.v_pages, pp.v_page_stride, pp.v_token_stride, pp.v_head_stride, 64);
  fp.paged.tma_k_row = paged_kv_tma_map(pp, pp.k_pages, pp.k_page_stride, pp.k_token_stride, pp.k_head_stride, 1);
  fp.paged.tma_v_row = paged_kv_tma_map(pp, pp.v_pages, pp.v_page_stride, pp.v_token_stride, pp.v_head_stride, 1);
  fp.paged.block_table = pp.block_table;
  fp.paged.bt_batch_stride = pp.bt_batch_stride;
  fp.paged.bt_head_stride = pp.bt_head_stride;
  fp.paged.bt_page_stride = pp.bt_page_stride;
  fp.paged.context_lens = pp.context_lens;
  fp.paged.page_shift = __builtin_ctz(static_cast<unsigned>(pp.page_size));
  fp.paged.num_pages = pp.num_pages;
  fp.paged.head_paged = pp.head_paged ? 1 : 0;

  // Units: each sequence's queries are its context's last len_q positions, so its tiles depend on its own
  // offset (counted on the device); the grid is sized from an upper bound, one tile more per sequence.
  const int64_t tiles_ub = varlen ? int64_t(pp.total_q) / kBlockM + pp.batch
                                  : int64_t(pp.batch) * ((int64_t(p.seqlen_q) + kBlockM - 1) / kBlockM + 1);
  launch_forward(fp, launch, query_tile_grid_of(tiles_ub, pp.batch, p.num_heads, sm_count(launch.device)));
}

void forward_sm90(const AttentionParams& p) {
  if (!forward_sm90_supports(p)) {
    throw Unsupported("the Hopper path has no forward kernel for this dtype / head dim / block size / pattern");
  }
  if (p.batch <= 0 || p.seqlen_q <= 0) return;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int64_t batch = varlen ? 1 : p.batch;  // varlen: one packed sequence of seqlen_q (= total) tokens
  const CUtensorMapDataType dt = tma_dtype_16bit(p.dtype);

  ForwardLaunchSm90 launch;
  launch.device = device_of(p.q, "q");
  launch.stream = static_cast<cudaStream_t>(p.stream);
  DeviceGuard guard(launch.device);

  ForwardParamsSm90 fp;
  fp.p = p;
  fp.tma_q = make_tensor_map_sm90(p.q, dt, batch, p.seqlen_q, p.num_heads, p.head_dim, p.q_stride);
  fp.tma_k = make_tensor_map_sm90(p.k, dt, batch, p.seqlen_k, p.num_kv_heads, p.head_dim, p.k_stride);
  fp.tma_v = make_tensor_map_sm90(p.v, dt, batch, p.seqlen_k, p.num_kv_heads, p.head_dim, p.v_stride);

  launch_forward(fp, launch, query_tile_grid_sm90(p, sm_count(launch.device)));
}

}  // namespace s2attn::cuda
