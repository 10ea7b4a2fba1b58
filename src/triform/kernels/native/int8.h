/* int8 products for a decoding step's few rows: each row of activations rounded to int8 with one scale
   (max |x| / 127, symmetric), then multiplied by int8 weight rows with every product summed exactly in
   int32. The sum is exact, so the result is the same on every CPU; only the instructions differ:
   - VNNI (AVX512-VNNI with VL, or AVX-VNNI): vpdpbusd multiplies 32 unsigned by 32 signed bytes and adds
     them in fours into int32 lanes. It needs one unsigned operand: each weight vector is offset by 128
     as it is loaded (w ^ 0x80, one instruction), and 128 · Σ q, one number per row of activations
     computed when the row is rounded, is taken off each sum at the end. (The activations offset
     instead would leave 128 · Σ w to compute for every output, a fifth of the work at four rows.)
   - AVX2: both operands widened to int16 and multiplied in pairs into int32 (vpmaddwd); not vpmaddubsw,
     whose 16-bit sums of pairs saturate (kernels/int8.py says where that clipped fbgemm's results).
   - elsewhere: plain C.
   A weight row is read once for up to four rows of activations; with int8 weights a model's blocks can
   fit in the last-level cache, where the widening fp32 kernels (gemv.c) were bound by their arithmetic.
   With AVX512-VNNI (32 vector registers) four weight rows are taken at once (`q8_tile`): one weight row
   at a time kept each row's sum waiting on the instruction's latency, and paid a horizontal sum for
   every output, which held 8 rows of a 8192 x 384 product to 40 G multiply-adds a second on one core
   of an AMD EPYC (Zen 4); sixteen sums in flight, added across in fours, do not wait. The tile takes
   64 bytes a step (512-bit registers), which that EPYC multiplies at twice the rate of 32 (vpdpbusd:
   7.6 G a second of 64 bytes, 8.2 G of 32, on one core): 8 rows of 384 x 1536 in 22 µs against 30,
   16 rows of 8192 x 384 in 220 against 245 (fbgemm's: 22 and 138). */

#ifndef TRIFORM_INT8_H
#define TRIFORM_INT8_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"

#if (defined(__AVX512VNNI__) && defined(__AVX512VL__)) || defined(__AVXVNNI__)
#include <immintrin.h>
#define Q8_VNNI 1
enum { Q8_WEIGHT_OFFSET = 128 };
#elif defined(__AVX2__)
#include <immintrin.h>
#define Q8_AVX2 1
enum { Q8_WEIGHT_OFFSET = 0 };
#else
enum { Q8_WEIGHT_OFFSET = 0 };
#endif

/* max |x[k]| over K values, an infinity or a NaN where there is one. The magnitudes' bits are compared
   as unsigned integers, which orders them as their values and puts a NaN above everything: a vector
   maximum, where fmaxf (which must skip NaNs) stayed a call to libm for every value, an eighth of the
   time of eight rows' product at 1536 wide on an AMD EPYC. */
static inline float q8_top(const float *x, int64_t K) {
  wide_lanes top = {0};
  int64_t k = 0;
  for (; k + LANES <= K; k += LANES) {
    wide_lanes v;
    memcpy(&v, x + k, sizeof v);
    v &= 0x7fffffffu;
    wide_lanes larger = (wide_lanes)(v > top);
    top = (v & larger) | (top & ~larger);
  }
  uint32_t bits = 0;
  for (int i = 0; i < LANES; i++) bits = top[i] > bits ? top[i] : bits;
  for (; k < K; k++) {
    uint32_t v;
    memcpy(&v, x + k, sizeof v);
    v &= 0x7fffffffu;
    bits = v > bits ? v : bits;
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* Row x (K values) as int8 q with x ≈ scale · q; returns the scale (0 for a row of zeros, NaN for a row
   with an infinity or a NaN, which then reaches the outputs), and sets *offset to what the weights'
   offset adds to each of the row's sums (Q8_WEIGHT_OFFSET · Σ q). */
static inline float q8_quantize_row(const float *x, int64_t K, int8_t *q, int32_t *offset) {
  float top = q8_top(x, K);
  *offset = 0;
  if (!(top <= 3.4e38f) || top != top) { /* an infinity or a NaN */
    memset(q, 0, (size_t)K);
    return NAN;
  }
  float inverse = top > 0 ? 127.0f / top : 0;
  int32_t sum = 0;
  for (int64_t k = 0; k < K; k++) sum += q[k] = (int8_t)nearbyintf(x[k] * inverse);
  *offset = Q8_WEIGHT_OFFSET * sum;
  return top / 127.0f;
}

#ifdef Q8_VNNI
/* sum + Σ of each four (w[i] + 128) · q[i], w's bytes taken as the unsigned operand. The instruction is
   written out: with the intrinsic, GCC 12 kept every sum in two registers, copied into and out of
   each instruction, and at sixteen sums (q8_tile) spilled them to the stack in the loop, which ran at
   a third of the speed. The activations go in a register, not a memory operand: q8_tile uses each
   four times, and as a memory operand GCC loaded it again for each (20 loads a step instead of 8, 8 rows
   of a 384 x 1536 product at 30 µs against 44 on an AMD EPYC, Zen 4). */
static inline __m256i q8_madd(__m256i sum, __m256i w, __m256i q) {
  __m256i u = _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80));
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  __asm__("vpdpbusd %2, %1, %0" : "+v"(sum) : "v"(u), "v"(q)); /* EVEX: any of the 32 registers */
#else
  sum = _mm256_dpbusd_avx_epi32(sum, u, q); /* AVX-VNNI alone: 16 registers, four sums at a time */
#endif
  return sum;
}
#endif

#if defined(Q8_VNNI) || defined(Q8_AVX2)
static inline int32_t q8_total(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
#endif

#ifdef Q8_VNNI
/* Σ_k q[r][k] · w[k] for rows r < R (R ≤ 4) of q, 32 bytes a step, with the weights' offset in
   (taken off by the caller); two steps at a time for one row, so that two sums are in flight. */
static inline void q8_dots(const int8_t *q, int64_t ldq, const int8_t *w, int64_t K, int R, int32_t *out) {
  __m256i s[4], t = _mm256_setzero_si256();
  for (int r = 0; r < 4; r++) s[r] = _mm256_setzero_si256();
  int64_t k = 0;
  if (R == 1)
    for (; k + 64 <= K; k += 64) {
      __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + k)), q0 = _mm256_loadu_si256((const __m256i *)(q + k));
      __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + k + 32));
      s[0] = q8_madd(s[0], w0, q0), t = q8_madd(t, w1, _mm256_loadu_si256((const __m256i *)(q + k + 32)));
    }
  for (; k + 32 <= K; k += 32) {
    __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + k));
    for (int r = 0; r < R; r++) s[r] = q8_madd(s[r], w0, _mm256_loadu_si256((const __m256i *)(q + r * ldq + k)));
  }
  s[0] = _mm256_add_epi32(s[0], t);
  for (int r = 0; r < R; r++) {
    out[r] = q8_total(s[r]);
    for (int64_t j = k; j < K; j++) out[r] += (w[j] + 128) * q[r * ldq + j];
  }
}
#elif defined(Q8_AVX2)
/* Σ_k q[r][k] · w[k] for rows r < R (R ≤ 4), 16 bytes a step, widened to int16. */
static inline void q8_dots(const int8_t *q, int64_t ldq, const int8_t *w, int64_t K, int R, int32_t *out) {
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
    for (int64_t j = k; j < K; j++) out[r] += (int32_t)q[r * ldq + j] * w[j];
  }
}
#else
static inline void q8_dots(const int8_t *q, int64_t ldq, const int8_t *w, int64_t K, int R, int32_t *out) {
  for (int r = 0; r < R; r++) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; k++) s += (int32_t)q[r * ldq + k] * w[k];
    out[r] = s;
  }
}
#endif

#if defined(Q8_VNNI) && defined(__AVX512VL__) && defined(__AVX512BW__)
#define Q8_TILES 1

/* 64 bytes of p from k on, those at K and beyond as zeros (a zero activation adds nothing). */
static inline __m512i q8_load(const void *p, int64_t k, int64_t K) {
  if (K - k >= 64) return _mm512_loadu_si512((const uint8_t *)p + k);
  return _mm512_maskz_loadu_epi8((__mmask64)((1ull << (K - k)) - 1), (const uint8_t *)p + k);
}

/* As q8_madd, 64 bytes at once. */
static inline __m512i q8_madd64(__m512i sum, __m512i w, __m512i q) {
  __m512i u = _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
  __asm__("vpdpbusd %2, %1, %0" : "+v"(sum) : "v"(u), "v"(q));
  return sum;
}

/* The four sums of s[0..3] (sixteen lanes each) as the four lanes of one vector, in order: added
   across by interleaving, so that each 128-bit quarter holds one partial sum of each, then the quarters
   added (single-cycle shuffles and adds, where hadd is several). */
static inline __m128i q8_totals4(const __m512i *s) {
  __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(s[0], s[1]), _mm512_unpackhi_epi32(s[0], s[1]));
  __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(s[2], s[3]), _mm512_unpackhi_epi32(s[2], s[3]));
  __m512i all = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  __m256i half = _mm256_add_epi32(_mm512_castsi512_si256(all), _mm512_extracti64x4_epi64(all, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
}

/* Bytes ahead of a load that each weight row is fetched: a weight read from memory (a step's
   weights, which the rest of the model pushed out of the caches) arrived too slowly for the hardware's
   prefetcher alone, with four rows read side by side. On an AMD EPYC (Zen 4), 1 thread, 100000 x 768
   int8 weights, one row of activations: 21 GB/s without, 24-25 at 1-1.5 kB ahead, 29 at 3 kB, 31-35 at
   6 kB (fbgemm's packed product: 30-33); 8192 x 384: 15 GB/s at 0.75 kB, 18 at 3 kB, 19-22 at 6 kB. */
#define Q8_AHEAD 6144

/* One step of q8_tile: 64 bytes (a cache line) of each of the four weight rows against 64 of each row of
   activations, and the four rows' lines Q8_AHEAD bytes on fetched (a prefetch past the end of the
   weights is harmless: it never faults). */
#define Q8_TILE_STEP(LOAD)                                                                         \
  {                                                                                                \
    __m512i w0 = LOAD(w, k), w1 = LOAD(w + K, k), w2 = LOAD(w + 2 * K, k), w3 = LOAD(w + 3 * K, k); \
    for (int c = 0; c < 4; c++) _mm_prefetch((const char *)(w + c * K + k + Q8_AHEAD), _MM_HINT_T0); \
    for (int r = 0; r < R; r++) {                                                                  \
      __m512i x = LOAD(q + r * ldq, k);                                                            \
      s[r][0] = q8_madd64(s[r][0], w0, x), s[r][1] = q8_madd64(s[r][1], w1, x);                    \
      s[r][2] = q8_madd64(s[r][2], w2, x), s[r][3] = q8_madd64(s[r][3], w3, x);                    \
    }                                                                                              \
  }
#define Q8_WHOLE(p, k) _mm512_loadu_si512((p) + (k))
#define Q8_LAST(p, k) q8_load(p, k, K)

/* Lane c of sums[r] = Σ_k q[r][k] · w[c][k], the weights' offset in, for rows r < R (R ≤ 4) and weight rows
   c < 4 (w + c · K): each load serves four products, and up to sixteen sums are in flight. */
static inline void q8_tile(const int8_t *q, int64_t ldq, const int8_t *w, int64_t K, int R, __m128i *sums) {
  __m512i s[4][4];
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 4; c++) s[r][c] = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) Q8_TILE_STEP(Q8_WHOLE)
  if (k < K) Q8_TILE_STEP(Q8_LAST)
  for (int r = 0; r < R; r++) sums[r] = q8_totals4(s[r]);
}
#endif

/* Output n (weight row w, its scale) of every row of q: (Σ q · w) · row scale · w's scale + b. */
static inline void q8_column(const int8_t *q, const float *row_scales, const int32_t *row_offsets, int64_t K,
                             const int8_t *w, float scale, float b, float *y, int64_t ldy, int64_t M) {
  int32_t s[4];
#define Q8_DOTS(rows) q8_dots(q + m * K, K, w, K, rows, s)
  IN_GROUPS_OF_FOUR(M, Q8_DOTS, for (int r = 0; r < R; r++) {
    y[(m + r) * ldy] = (float)(s[r] - row_offsets[m + r]) * row_scales[m + r] * scale + b;
  })
#undef Q8_DOTS
}

/* Outputs c < C (C ≤ 4) of every row of q, weight rows w + c · K with scales[c] and bias[c] (or none):
   as q8_column gives each, four at a time where the CPU has the registers for q8_tile. */
static inline void q8_columns(const int8_t *q, const float *row_scales, const int32_t *row_offsets, int64_t K,
                              const int8_t *w, const float *scales, const float *bias, float *y, int64_t ldy,
                              int64_t M, int C) {
#ifdef Q8_TILES
  if (C == 4) { /* the four outputs of a row at once, as q8_column computes each */
    __m128i s[4];
    __m128 scale = _mm_loadu_ps(scales), b = bias ? _mm_loadu_ps(bias) : _mm_setzero_ps();
#define Q8_TILE(rows) q8_tile(q + m * K, K, w, K, rows, s)
    IN_GROUPS_OF_FOUR(M, Q8_TILE, for (int r = 0; r < R; r++) {
      __m128 sum = _mm_cvtepi32_ps(_mm_sub_epi32(s[r], _mm_set1_epi32(row_offsets[m + r])));
      __m128 scaled = _mm_mul_ps(sum, _mm_set1_ps(row_scales[m + r]));
#ifdef __FMA__ /* as -ffp-contract=fast contracts q8_column's scalar form */
      _mm_storeu_ps(y + (m + r) * ldy, _mm_fmadd_ps(scaled, scale, b));
#else
      _mm_storeu_ps(y + (m + r) * ldy, _mm_add_ps(_mm_mul_ps(scaled, scale), b));
#endif
    })
#undef Q8_TILE
    return;
  }
#endif
  for (int c = 0; c < C; c++)
    q8_column(q, row_scales, row_offsets, K, w + c * K, scales[c], bias ? bias[c] : 0, y + c, ldy, M);
}

#endif
