// GS_HOST_DEVICE marks an inline function that both the CPU code and the CUDA kernels compile,
// so that both compute the same thing from one definition (ops/sampling_math.h,
// ops/moe_dispatch.h). Outside nvcc it expands to nothing.
#pragma once

#if defined(__CUDACC__)
#define GS_HOST_DEVICE __host__ __device__
#else
#define GS_HOST_DEVICE
#endif
