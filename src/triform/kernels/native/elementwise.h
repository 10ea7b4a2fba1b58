/* What the fused kernels do between products, element by element: norms over a row, activations,
   and bf16's rounding, in fp32. */

#ifndef TRIFORM_ELEMENTWISE_H
#define TRIFORM_ELEMENTWISE_H

#include <math.h>
#include <stdint.h>

#include "simd.h"

enum { NORM_NONE = 0, NORM_LAYER = 1, NORM_RMS = 2 };
enum { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2, ACT_GELU_TANH = 3, ACT_SILU = 4 };

static inline float activate(int act, float v) {
  switch (act) {
    case ACT_RELU: return v > 0 ? v : 0;
    case ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case ACT_GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case ACT_SILU: return v / (1.0f + expf(-v));
    default: return v;
  }
}

static inline float bf16_round(float f) { return widen(narrow(f)); }

/* NAME##_normalize for parameters of type T (SCALAR: one as fp32; ROUND: a result as the modules
   round it). */
#define NORMALIZE(NAME, T, SCALAR, ROUND)                                                                 \
  /* Row x (n values, fp32) normalised in place: LayerNorm (w, b: NULL for none) or RMSNorm (w). */      \
  static void NAME##_normalize(float *x, int64_t n, int kind, const T *w, const T *b, float eps) {        \
    float mean = 0, spread = 0;                                                                           \
    if (kind == NORM_LAYER) {                                                                             \
      for (int64_t i = 0; i < n; i++) mean += x[i];                                                       \
      mean /= (float)n;                                                                                   \
    }                                                                                                     \
    for (int64_t i = 0; i < n; i++) spread += (x[i] - mean) * (x[i] - mean);                              \
    float inverse = 1.0f / sqrtf(spread / (float)n + eps);                                                \
    for (int64_t i = 0; i < n; i++) {                                                                     \
      float v = (x[i] - mean) * inverse;                                                                  \
      if (w) v *= SCALAR(w[i]);                                                                           \
      if (b && kind == NORM_LAYER) v += SCALAR(b[i]);                                                     \
      x[i] = ROUND(v);                                                                                    \
    }                                                                                                     \
  }

#endif
