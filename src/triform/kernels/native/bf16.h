/* bf16 products by pairs, where the CPU has AVX512-BF16 (vdpbf16ps): 16 bf16 activations times 16 bf16
   weights, each pair's two exact products added into one of 8 fp32 sums, in one instruction. The
   widening kernels (gemv.c) spend three instructions on every 8 weights before their multiply-add; at a
   few rows a bf16 product ran at half of the bandwidth the fp32 one reached, bound by those
   instructions rather than by memory. Both operands must be bf16: a bf16 model's activations are bf16
   values, so they are narrowed without loss. The instruction treats subnormal inputs and results as
   zero, which bf16 values of a model (fp32's exponent range) practically never are. */

#ifndef TRIFORM_BF16_H
#define TRIFORM_BF16_H

#include <stdint.h>

#include "simd.h"

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
#include <immintrin.h>
#define BF16_PAIRS 1

static inline __m256 bf16_pairs(__m256 sum, const uint16_t *x, __m256i w) {
  return _mm256_dpbf16_ps(sum, (__m256bh)_mm256_loadu_si256((const __m256i *)x), (__m256bh)w);
}

static inline float bf16_total(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* Σ_k x[r][k] · w[k] for rows r < R (R ≤ 4), 16 weights a step; four sums in flight for one row. */
static inline void bf16_pair_dots(const uint16_t *x, int64_t ldx, const uint16_t *w, int64_t K, int R, float *out) {
  __m256 s[4], t[4];
  for (int r = 0; r < 4; r++) s[r] = t[r] = _mm256_setzero_ps();
  int64_t k = 0;
  if (R == 1)
    for (; k + 64 <= K; k += 64) {
      s[0] = bf16_pairs(s[0], x + k, _mm256_loadu_si256((const __m256i *)(w + k)));
      t[0] = bf16_pairs(t[0], x + k + 16, _mm256_loadu_si256((const __m256i *)(w + k + 16)));
      s[1] = bf16_pairs(s[1], x + k + 32, _mm256_loadu_si256((const __m256i *)(w + k + 32)));
      t[1] = bf16_pairs(t[1], x + k + 48, _mm256_loadu_si256((const __m256i *)(w + k + 48)));
    }
  for (; k + 16 <= K; k += 16) {
    __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + k));
    for (int r = 0; r < R; r++) s[r] = bf16_pairs(s[r], x + r * ldx + k, w0);
  }
  if (R == 1) s[0] = _mm256_add_ps(_mm256_add_ps(s[0], t[0]), _mm256_add_ps(s[1], t[1]));
  for (int r = 0; r < R; r++) {
    out[r] = bf16_total(R == 1 ? s[0] : _mm256_add_ps(s[r], t[r]));
    for (int64_t j = k; j < K; j++) out[r] += widen(x[r * ldx + j]) * widen(w[j]);
  }
}

/* Output row n (weight row w) of every row of x, as gemv.c's columns give it: fp32 (y) or bf16 (y16). */
static inline void bf16_pairs_column(const uint16_t *x, int64_t ldx, const uint16_t *w, float b, float *y,
                                     uint16_t *y16, int64_t ldy, int64_t M, int64_t K) {
  float s[4];
#define PAIR_DOTS(rows) bf16_pair_dots(x + m * ldx, ldx, w, K, rows, s)
  IN_GROUPS_OF_FOUR(M, PAIR_DOTS, for (int r = 0; r < R; r++) {
    if (y16) y16[(m + r) * ldy] = narrow(s[r] + b);
    else y[(m + r) * ldy] = s[r] + b;
  })
#undef PAIR_DOTS
}
#endif

#endif
