// Compression of an arbitrary per-head block mask into row lists (forward) and column lists (backward).
#include <string>

#include "s2attn/errors.h"
#include "s2attn/pattern.h"

namespace s2attn {

BlockMask::BlockMask(const uint8_t* bits, int heads, int rows, int cols, bool causal)
    : heads_(heads), rows_(rows), cols_(cols) {
  if (heads < 1 || rows < 1 || cols < 1) {
    throw InvalidArgument("mask", "shape [heads, rows, cols] with every extent >= 1, got [" +
                                      std::to_string(heads) + ", " + std::to_string(rows) + ", " +
                                      std::to_string(cols) + "]");
  }
  if (bits == nullptr) throw InvalidArgument("mask", "a non-null pointer");
  const size_t n = size_t(heads) * rows * cols;
  bits_.resize(n);
  for (size_t e = 0; e < n; ++e) {
    const int j = int(e % cols);
    const int i = int((e / cols) % rows);
    bits_[e] = (bits[e] != 0 && !(causal && j > i)) ? 1 : 0;
  }
  row_ptr_.assign(size_t(heads) * rows + 1, 0);
  col_ptr_.assign(size_t(heads) * cols + 1, 0);
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < rows; ++i) {
      const size_t r = size_t(h) * rows + i;
      for (int j = 0; j < cols; ++j) {
        if (bits_[r * cols + j]) {
          col_idx_.push_back(j);
          ++col_ptr_[size_t(h) * cols + j + 1];
        }
      }
      row_ptr_[r + 1] = static_cast<int32_t>(col_idx_.size());
    }
  }
  for (size_t c = 0; c + 1 < col_ptr_.size(); ++c) col_ptr_[c + 1] += col_ptr_[c];
  row_idx_.resize(col_idx_.size());
  std::vector<int32_t> fill(col_ptr_.begin(), col_ptr_.end() - 1);
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < rows; ++i) {  // ascending rows, so each column list comes out sorted
      const size_t r = size_t(h) * rows + i;
      for (int32_t e = row_ptr_[r]; e < row_ptr_[r + 1]; ++e) {
        row_idx_[fill[size_t(h) * cols + col_idx_[e]]++] = i;
      }
    }
  }
}

BlockMaskView BlockMask::view() const {
  BlockMaskView v;
  v.bits = bits_.data();
  v.row_ptr = row_ptr_.data();
  v.col_idx = col_idx_.data();
  v.col_ptr = col_ptr_.data();
  v.row_idx = row_idx_.data();
  v.heads = heads_;
  v.rows = rows_;
  v.cols = cols_;
  return v;
}

}  // namespace s2attn
