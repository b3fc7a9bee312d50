// Umbrella header of the s2attn C++ API.
#pragma once
#include "s2attn/config.h"
#include "s2attn/errors.h"
#include "s2attn/ops.h"
#include "s2attn/pattern.h"
#include "s2attn/tensor.h"
#include "s2attn/paged.h"
