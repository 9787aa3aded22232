#pragma once
// Emulation stand-in for CUDA's cuda_bf16.h: only the type's bits are read.
struct __nv_bfloat16 {
  unsigned short x;
};
