// The per-device cache of a block mask's compressed lists (Pattern::prepare / Pattern::mask_view).
#pragma once
#include <memory>

#include "s2attn/pattern.h"

namespace s2attn::detail {

std::shared_ptr<DeviceMaskCache> make_device_mask_cache(std::shared_ptr<const BlockMask> mask);

// The device view of the cached lists on CUDA device `device`, uploading them when the cache is cold
// (then `stream`, if it is capturing a graph, makes this throw instead).
BlockMaskView device_mask_view(DeviceMaskCache& cache, int device, void* stream);

}  // namespace s2attn::detail
