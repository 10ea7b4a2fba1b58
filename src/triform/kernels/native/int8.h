/* int8 products for a decoding step's few rows: each row of activations rounded to int8 with one scale
   (max |x| / 127, symmetric), then multiplied by int8 weight rows with every product summed exactly in
   int32. The sum is exact, so the result is the same on every CPU; only the instructions differ:
   - VNNI (AVX512-VNNI with VL, or AVX-VNNI): vpdpbusd multiplies 32 unsigned by 32 signed bytes and adds
     them in fours into int32 lanes. It needs one unsigned operand: the activations are stored offset by
     128 (q ^ 0x80), and 128 · Σ w, summed by the same instruction, is taken off at the end.
   - AVX2: both operands widened to int16 and multiplied in pairs into int32 (vpmaddwd); not vpmaddubsw,
     whose 16-bit sums of pairs saturate (kernels/int8.py says where that clipped fbgemm's results).
   - elsewhere: plain C.
   A weight row is read once for up to four rows of activations; with int8 weights a model's blocks can
   fit in the last-level cache, where the widening fp32 kernels (gemv.c) were bound by their arithmetic. */

#ifndef TRIFORM_INT8_H
#define TRIFORM_INT8_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"

#if (defined(__AVX512VNNI__) && defined(__AVX512VL__)) || defined(__AVXVNNI__)
#include <immintrin.h>
#define Q8_VNNI 1
enum { Q8_OFFSET = 128 };
#elif defined(__AVX2__)
#include <immintrin.h>
#define Q8_AVX2 1
enum { Q8_OFFSET = 0 };
#else
enum { Q8_OFFSET = 0 };
#endif

/* Row x (K values) as int8 q (stored offset by Q8_OFFSET) with x ≈ scale · q; returns the scale (0 for
   a row of zeros, NaN for a row with an infinity or a NaN, which then reaches the outputs). */
static inline float q8_quantize_row(const float *x, int64_t K, uint8_t *q) {
  float top = 0;
  for (int64_t k = 0; k < K; k++) top = fmaxf(top, fabsf(x[k]));
  if (!(top <= 3.4e38f) || top != top) { /* an infinity or a NaN */
    memset(q, Q8_OFFSET, (size_t)K);
    return NAN;
  }
  float inverse = top > 0 ? 127.0f / top : 0;
  for (int64_t k = 0; k < K; k++) q[k] = (uint8_t)((int)nearbyintf(x[k] * inverse) + Q8_OFFSET);
  return top / 127.0f;
}

#ifdef Q8_VNNI
static inline __m256i q8_madd(__m256i sum, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(sum, u, s);
#else
  return _mm256_dpbusd_avx_epi32(sum, u, s);
#endif
}

static inline int32_t q8_total(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

/* Σ_k (q[r][k] - 128) · w[k] for rows r < R (R ≤ 4) of q, 32 bytes a step; two steps at a time for
   one row, so that four sums are in flight over the instruction's latency. */
static inline void q8_dots(const uint8_t *q, int64_t ldq, const int8_t *w, int64_t K, int R, int32_t *out) {
  const __m256i offset = _mm256_set1_epi8((char)0x80);
  __m256i s[4], t[4], ws = _mm256_setzero_si256(), wt = _mm256_setzero_si256();
  for (int r = 0; r < 4; r++) s[r] = t[r] = _mm256_setzero_si256();
  int64_t k = 0;
  if (R == 1)
    for (; k + 64 <= K; k += 64) {
      __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + k));
      __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + k + 32));
      s[0] = q8_madd(s[0], _mm256_loadu_si256((const __m256i *)(q + k)), w0);
      t[0] = q8_madd(t[0], _mm256_loadu_si256((const __m256i *)(q + k + 32)), w1);
      ws = q8_madd(ws, offset, w0), wt = q8_madd(wt, offset, w1);
    }
  for (; k + 32 <= K; k += 32) {
    __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + k));
    for (int r = 0; r < R; r++) s[r] = q8_madd(s[r], _mm256_loadu_si256((const __m256i *)(q + r * ldq + k)), w0);
    ws = q8_madd(ws, offset, w0);
  }
  int32_t correction = q8_total(_mm256_add_epi32(ws, wt));
  for (int r = 0; r < R; r++) {
    out[r] = q8_total(_mm256_add_epi32(s[r], t[r])) - correction;
    for (int64_t j = k; j < K; j++) out[r] += ((int32_t)q[r * ldq + j] - 128) * w[j];
  }
}
#elif defined(Q8_AVX2)
static inline int32_t q8_total(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

/* Σ_k q[r][k] · w[k] for rows r < R (R ≤ 4), 16 bytes a step, widened to int16. */
static inline void q8_dots(const uint8_t *q, int64_t ldq, const int8_t *w, int64_t K, int R, int32_t *out) {
  __m256i s[4];
  for (int r = 0; r < 4; r++) s[r] = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + k)));
    for (int r = 0; r < R; r++) {
      __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + r * ldq + k)));
      s[r] = _mm256_add_epi32(s[r], _mm256_madd_epi16(x, w0));
    }
  }
  for (int r = 0; r < R; r++) {
    out[r] = q8_total(s[r]);
    for (int64_t j = k; j < K; j++) out[r] += (int32_t)(int8_t)q[r * ldq + j] * w[j];
  }
}
#else
static inline void q8_dots(const uint8_t *q, int64_t ldq, const int8_t *w, int64_t K, int R, int32_t *out) {
  for (int r = 0; r < R; r++) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; k++) s += (int32_t)(int8_t)q[r * ldq + k] * w[k];
    out[r] = s;
  }
}
#endif

/* Output n (weight row w, its scale) of every row of q: (Σ q · w) · row scale · w's scale + b. */
static inline void q8_column(const uint8_t *q, const float *row_scales, int64_t K, const int8_t *w, float scale,
                             float b, float *y, int64_t ldy, int64_t M) {
  int32_t s[4];
#define Q8_DOTS(rows) q8_dots(q + m * K, K, w, K, rows, s)
  IN_GROUPS_OF_FOUR(M, Q8_DOTS, for (int r = 0; r < R; r++) {
    y[(m + r) * ldy] = (float)s[r] * row_scales[m + r] * scale + b;
  })
#undef Q8_DOTS
}

#endif
