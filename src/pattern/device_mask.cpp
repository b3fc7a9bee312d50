// Device copies of a block mask's row and column lists, built once per device and cached with the
// pattern: one int32 buffer [row_ptr | col_idx | col_ptr | row_idx]. The ops then pass device pointers
// to the kernels without allocating or synchronising (CUDA-graph safe once prepared).
#include "pattern/device_mask.h"

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "s2attn/errors.h"
#ifdef S2ATTN_WITH_CUDA
#include "cuda/common/device.h"
#endif

namespace s2attn {
namespace detail {

class DeviceMaskCache {
 public:
  explicit DeviceMaskCache(std::shared_ptr<const BlockMask> mask) : mask_(std::move(mask)) {}
  ~DeviceMaskCache() {
#ifdef S2ATTN_WITH_CUDA
    for (const Entry& e : entries_) cuda::free_device_buffer(e.device, e.buffer);
#endif
  }
  DeviceMaskCache(const DeviceMaskCache&) = delete;
  DeviceMaskCache& operator=(const DeviceMaskCache&) = delete;

  BlockMaskView view(int device, void* stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const Entry& e : entries_) {
      if (e.device == device) return e.view;
    }
#ifdef S2ATTN_WITH_CUDA
    if (cuda::stream_is_capturing(device, stream)) {
      throw InvalidArgument("pattern", "prepared on this device (Pattern::prepare) before CUDA graph capture: "
                                       "the first use copies the block mask's lists to the device");
    }
    const BlockMask& m = *mask_;
    const std::vector<int32_t>* parts[] = {&m.row_ptr(), &m.col_idx(), &m.col_ptr(), &m.row_idx()};
    std::vector<int32_t> host;
    size_t offsets[4];
    for (int k = 0; k < 4; ++k) {
      offsets[k] = host.size();
      host.insert(host.end(), parts[k]->begin(), parts[k]->end());
    }
    Entry e;
    e.device = device;
    e.buffer = cuda::upload_blocking(device, host.data(), host.size() * sizeof(int32_t));
    const int32_t* base = static_cast<const int32_t*>(e.buffer);
    e.view.bits = nullptr;  // the kernels walk the lists; the dense bits stay on the host
    e.view.row_ptr = base + offsets[0];
    e.view.col_idx = base + offsets[1];
    e.view.col_ptr = base + offsets[2];
    e.view.row_idx = base + offsets[3];
    e.view.heads = m.heads();
    e.view.rows = m.rows();
    e.view.cols = m.cols();
    entries_.push_back(e);
    return e.view;
#else
    (void)stream;
    throw Unsupported("s2attn was built without a CUDA backend; CUDA tensors cannot be processed");
#endif
  }

 private:
  struct Entry {
    int device = 0;
    void* buffer = nullptr;
    BlockMaskView view;
  };
  std::shared_ptr<const BlockMask> mask_;
  std::mutex mutex_;
  std::vector<Entry> entries_;
};

std::shared_ptr<DeviceMaskCache> make_device_mask_cache(std::shared_ptr<const BlockMask> mask) {
  return std::make_shared<DeviceMaskCache>(std::move(mask));
}

BlockMaskView device_mask_view(DeviceMaskCache& cache, int device, void* stream) {
  return cache.view(device, stream);
}

}  // namespace detail

void Pattern::prepare(Device device) const { (void)mask_view(device); }

BlockMaskView Pattern::mask_view(Device device, void* stream) const {
  if (!mask_) return BlockMaskView{};
  if (device.type == DeviceType::cpu) return mask_->view();
  if (device.index < 0) throw InvalidArgument("device", "a CUDA device index >= 0, got " + std::to_string(device.index));
  return detail::device_mask_view(*device_masks_, device.index, stream);
}

}  // namespace s2attn
