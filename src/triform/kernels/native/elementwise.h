/* What the fused kernels do between products, element by element: norms over a row, activations,
   and bf16's rounding, in fp32. */

#ifndef TRIFORM_ELEMENTWISE_H
#define TRIFORM_ELEMENTWISE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"

enum { NORM_NONE = 0, NORM_LAYER = 1, NORM_RMS = 2 };
enum { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2, ACT_GELU_TANH = 3, ACT_SILU = 4 };

/* e^x within about 1 ulp, inline: a call of libm's for every activation (tanhf, which calls expm1f)
   took a seventh of a decoding step of 8 rows of the benchmark's GPT with int8 weights (AMD EPYC,
   Zen 4). x = n ln 2 + r, |r| ≤ ln 2 / 2 (ln 2 in two parts, so that r is exact to fp32), e^r by its
   Taylor series to r⁷ (the next term is under 5e-9 of the result), 2ⁿ put in the exponent's bits.
   Below -87 the result is 0 and above 88 ∞ (where 2ⁿ would not be a normal fp32), a NaN stays NaN.
   No branch: a loop of these is vectorized (n rounded by adding and taking off 1.5 · 2²³). */
static inline float exp_inline(float x) {
  float c = x > -87.0f ? x : -87.0f; /* a NaN too: the arithmetic stays finite, the NaN is put back */
  c = c < 88.0f ? c : 88.0f;
  float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = (c - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720, p = p * r + 1.0f / 120, p = p * r + 1.0f / 24, p = p * r + 1.0f / 6;
  p = p * r + 0.5f, p = p * r + 1.0f, p = p * r + 1.0f;
  uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  float e = p * scale;
  e = x < -87.0f ? 0.0f : e;
  e = x > 88.0f ? INFINITY : e;
  return x != x ? x : e;
}

#ifdef __AVX512F__
/* exp_inline for 16 values, by the same steps, 2ⁿ put in by vscalefps: what the compiler's
   vectorized exp_inline builds from 2ⁿ's bits, with the clamps and tails that needs, is some 10
   instructions more. Below -87 the result is 0, as exp_inline's, not a subnormal (which would slow
   the products that read it on CPUs that take subnormals by microcode); above 88 it is e^88, finite
   (for the activations' reciprocals); a NaN stays NaN (vmaxps and vminps return their second operand
   where one is NaN). */
static inline __m512 exp16(__m512 x) {
  __mmask16 kept = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
  __m512 c = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), c);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720)), p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24)), p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f)), p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(kept, _mm512_scalef_ps(p, n));
}
#endif

/* out[j] = e^(x[j] - shift) for j < n (out may be x): a softmax's exponentials. */
static inline void exp_shifted(const float *x, float *out, int64_t n, float shift) {
  int64_t j = 0;
#ifdef __AVX512F__
  __m512 s = _mm512_set1_ps(shift);
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(out + j, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + j), s)));
#endif
  for (; j < n; j++) out[j] = exp_inline(x[j] - shift);
}

/* 2 Φ(v) (Φ: the standard normal's distribution function) given e = e^(-v²/2), with no libm call: as
   erfc(|v| / √2) for v < 0 and two less it otherwise, so that neither tail cancels. erfc(z) for z ≥ 0
   is t · p(t) · e^(-z²), t = 1 / (1 + a z), by Abramowitz & Stegun's 7.1.26 (within 1.5e-7 of erf,
   as torch's own GELU computes it). Its exponential is e, which the GELU's slope needs too: one
   exponential a value forward and backward. Numerical Recipes' erfc (ten terms in t and an
   exponential of its own), which this replaced, made the fp32 GELU's backward pass take longer than
   torch's and the bf16 forward 2.5 times as long (AMD EPYC Zen 5). */
static inline float twice_phi(float v, float e) {
  float t = 1.0f / (1.0f + 0.3275911f * 0.70710678118654752f * fabsf(v));
  float p = 1.061405429f;
  p = p * t - 1.453152027f, p = p * t + 1.421413741f, p = p * t - 0.284496736f, p = p * t + 0.254829592f;
  float c = t * p * e;
  return v < 0 ? c : 2.0f - c;
}

/* GELU (erf) as v · Φ(v). */
static inline float gelu_erf(float v) { return 0.5f * v * twice_phi(v, exp_inline(-0.5f * v * v)); }

/* GELU (tanh) as v · (1 + tanh u) / 2 = v / (1 + e^(-2u)), which is the same number and needs one
   exponential and no subtraction that cancels. */
static inline float activate(int act, float v) {
  switch (act) {
    case ACT_RELU: return v < 0 ? 0 : v; /* a NaN stays NaN, as torch's relu keeps it */
    case ACT_GELU: return gelu_erf(v);
    case ACT_GELU_TANH: return v / (1.0f + exp_inline(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
    case ACT_SILU: return v / (1.0f + exp_inline(-v));
    default: return v;
  }
}

/* activate over x[0..n) in place, the kind chosen once for the row: each loop is vectorized. */
static inline void activate_row(int act, float *x, int64_t n) {
  switch (act) {
    case ACT_RELU:
      for (int64_t i = 0; i < n; i++) x[i] = x[i] < 0 ? 0 : x[i];
      break;
    case ACT_GELU:
      for (int64_t i = 0; i < n; i++) x[i] = activate(ACT_GELU, x[i]);
      break;
    case ACT_GELU_TANH:
      for (int64_t i = 0; i < n; i++) x[i] = activate(ACT_GELU_TANH, x[i]);
      break;
    case ACT_SILU:
      for (int64_t i = 0; i < n; i++) x[i] = activate(ACT_SILU, x[i]);
      break;
    default:
      break;
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
