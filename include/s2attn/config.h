// Portability macros shared by host and device code.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define S2_HD __host__ __device__ __forceinline__
#else
#define S2_HD inline
#endif

#define S2ATTN_VERSION_MAJOR 0
#define S2ATTN_VERSION_MINOR 1
#define S2ATTN_VERSION_PATCH 0
