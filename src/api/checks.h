// Argument checks shared by the front doors (validate.cpp, validate_paged.cpp): each throws the typed error
// that names the argument and states the expectation.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

#include "s2attn/errors.h"
#include "s2attn/tensor.h"

namespace s2attn::checks {

std::string shape_str(const TensorView& t);
std::string device_str(const Device& d);
inline bool is_float_io(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16; }

// A tensor with data (unless empty), rank 1..4, non-negative sizes and strides.
void require_defined(const char* name, const TensorView& t);
// On `dev` (the device of q).
void require_device(const char* name, const TensorView& t, const Device& dev);
void require_dtype(const char* name, const TensorView& t, DType want, const char* what);
void require_shape(const char* name, const TensorView& t, std::initializer_list<int64_t> shape);
// The last (head-dim) dimension contiguous.
void require_last_contiguous(const char* name, const TensorView& t);

}  // namespace s2attn::checks
