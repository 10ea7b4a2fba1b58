/* The library's entry points that its other files call: one declaration each, for both types. */

#ifndef TRIFORM_KERNELS_H
#define TRIFORM_KERNELS_H

#include <stdint.h>

#define FUSED_LINEAR(NAME, T, WT)                                                                          \
  int triform_fused_linear_##NAME(const T *x, int64_t ldx, int pre, const T *pre_w, const T *pre_b,       \
                                  float pre_eps, const WT *W, const T *bias, const float *scales,         \
                                  int act, int gated, const T *residual, int64_t ldr, int post,           \
                                  const T *post_w,                                                        \
                                  const T *post_b, float post_eps, T *y, int64_t ldy, int64_t M,          \
                                  int64_t N, int64_t K, int threads)
/* q, the new keys and values and out of type T; the cache's keys and values of type C */
#define ATTEND_STEP(NAME, T, C)                                                                            \
  int triform_attend_step_##NAME(const T *q, int64_t ldq, const T *new_k, const T *new_v, C *k, int64_t kb, \
                                 int64_t kh, int64_t kt, C *v, int64_t vb, int64_t vh, int64_t vt,        \
                                 int64_t position, const void *mask, int kind, int64_t mb, int64_t mh,    \
                                 int64_t mt, T *out, int64_t ldo, int64_t B, int64_t H, int64_t groups,   \
                                 int64_t keys, int64_t d, float scale, int threads)

FUSED_LINEAR(f32, float, float);
FUSED_LINEAR(bf16, uint16_t, uint16_t);
FUSED_LINEAR(q8, float, int8_t);
ATTEND_STEP(f32, float, float);
ATTEND_STEP(bf16, uint16_t, uint16_t);
ATTEND_STEP(f32_bf16, float, uint16_t); /* fp32 rows, a bf16 cache (int8 decoding's) */

#endif
