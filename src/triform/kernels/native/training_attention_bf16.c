/* The training attention of training_attention.c for bf16 q, k, v (a step under bf16 autocast), its
   products by AVX512-BF16's pair instruction (vdpbf16ps): 16 fp32 sums each take two exact bf16
   products an instruction, twice the multiply-adds of an fp32 FMA. The scores, their softmax and its
   gradient stay fp32 in the caches; the probabilities and their gradient are rounded to bf16 only as
   operands of the products that follow them, as torch's bf16 attention rounds them.

   The instruction multiplies pairs of neighbours along the sum: its right-hand operand is laid out with
   the two values of a pair side by side (`pairs_down`: rows 2p and 2p + 1 interleaved; `pairs_across`:
   a row-major operand whose sum runs along its rows, transposed by 32-bit pairs), its left-hand one is
   read as it is, a pair broadcast at a time. Where the CPU lacks the instruction the functions say so
   (-2) and kernels/native.py offers no bf16 candidate. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "training_attention.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>

int triform_attention_bf16_available(void) { return 1; }

/* A (B, H, T, d) bf16 operand at place x: the pair (b, h). */
static inline uint16_t *at16(const place *x, int64_t b, int64_t h) {
  return (uint16_t *)(void *)x->p + b * x->b + h * x->h;
}

/* c (or c16, narrowed) rows r < R, columns [0, 16 NV) = Σ_p A(r, pair p) · b[p], R · NV sums in registers:
   pair p of row r at a + r · ar + p · ap (ap 2: row-major; ar 2: pairs down, as `narrowed_pairs` lays
   them), b[p] a row of bk pairs (uint32: the two bf16 of one column). */
#define TILE16(R, NV)                                                                                       \
  static void tile16_##R##_##NV(int64_t pairs, const uint16_t *a, int64_t ar, int64_t ap, const uint32_t *b,  \
                                int64_t bk, float *c, uint16_t *c16, int64_t cr) {                          \
    __m512 sums[R][NV];                                                                                      \
    for (int r = 0; r < (R); r++)                                                                            \
      for (int j = 0; j < (NV); j++) sums[r][j] = _mm512_setzero_ps();                                       \
    for (int64_t p = 0; p < pairs; p++) {                                                                    \
      __m512bh x[NV];                                                                                        \
      for (int j = 0; j < (NV); j++) x[j] = (__m512bh)_mm512_loadu_si512((const void *)(b + p * bk + 16 * j)); \
      for (int r = 0; r < (R); r++) {                                                                        \
        uint32_t two;                                                                                        \
        memcpy(&two, a + r * ar + p * ap, sizeof two);                                                       \
        __m512bh s = (__m512bh)_mm512_set1_epi32((int)two);                                                  \
        for (int j = 0; j < (NV); j++) sums[r][j] = _mm512_dpbf16_ps(sums[r][j], s, x[j]);                   \
      }                                                                                                      \
    }                                                                                                        \
    for (int r = 0; r < (R); r++)                                                                            \
      for (int j = 0; j < (NV); j++) {                                                                       \
        if (c16) _mm256_storeu_si256((__m256i *)(c16 + r * cr + 16 * j), (__m256i)_mm512_cvtneps_pbh(sums[r][j])); \
        else _mm512_storeu_ps(c + r * cr + 16 * j, sums[r][j]);                                              \
      }                                                                                                      \
  }

#define TILES16(NV) TILE16(1, NV) TILE16(2, NV) TILE16(3, NV) TILE16(4, NV) TILE16(5, NV) TILE16(6, NV) \
  TILE16(7, NV) TILE16(8, NV)
TILES16(1)
TILES16(2)

typedef void (*tile16_kernel)(int64_t, const uint16_t *, int64_t, int64_t, const uint32_t *, int64_t, float *,
                              uint16_t *, int64_t);
static const tile16_kernel TILE16_KERNELS[2][TILE_ROWS] = {
    {tile16_1_1, tile16_2_1, tile16_3_1, tile16_4_1, tile16_5_1, tile16_6_1, tile16_7_1, tile16_8_1},
    {tile16_1_2, tile16_2_2, tile16_3_2, tile16_4_2, tile16_5_2, tile16_6_2, tile16_7_2, tile16_8_2},
};

/* c (m × n) = A (m × inner) · B, A's pairs at a, ar and ap as for TILE16, B as pairs (bk pairs a row of
   pairs), n a multiple of 16, into fp32 c or bf16 c16 (rows cr apart); `part` as training_attention.c's
   product. A sum over an odd count reads one more pair element, which every operand holds as 0. */
static void product16(int64_t m, int64_t n, int64_t inner, const uint16_t *a, int64_t ar, int64_t ap,
                      const uint32_t *b, int64_t bk, float *c, uint16_t *c16, int64_t cr, int part) {
  for (int64_t i = 0; i < m; i += TILE_ROWS) {
    int rows = m - i < TILE_ROWS ? (int)(m - i) : TILE_ROWS;
    int64_t last = i + rows, columns = n, from = 0, to = inner;
    if (part == COLUMNS_TO_ROW) columns = (last + 15) / 16 * 16 < n ? (last + 15) / 16 * 16 : n;
    if (part == INNER_TO_ROW) to = last < inner ? last : inner;
    if (part == INNER_FROM_ROW) from = i < inner ? i : inner; /* i is even: a tile starts at a multiple of 8 */
    int64_t pairs = (to - from + 1) / 2;
    for (int64_t j = 0; j < columns; j += 32) {
      int halves = columns - j >= 32 ? 2 : 1;
      TILE16_KERNELS[halves - 1][rows - 1](pairs, a + i * ar + from / 2 * ap, ar, ap, b + from / 2 * bk + j, bk,
                                           c ? c + i * cr + j : 0, c16 ? c16 + i * cr + j : 0, cr);
    }
  }
}

/* to[p][c] = (x[2p][c], x[2p + 1][c]) for c < cols, rows ≥ `rows` read as 0, up to `padded` rows (even):
   an operand whose sum runs down its rows (V, K, dO, Q), as the right-hand side. */
static void pairs_down(const uint16_t *x, int64_t xt, int64_t rows, int64_t cols, int64_t padded, uint32_t *to) {
  for (int64_t p = 0; 2 * p < padded; p++) {
    const uint16_t *even = x + 2 * p * xt, *odd = even + xt;
    uint32_t *row = to + p * cols;
    if (2 * p + 1 < rows)
      for (int64_t c = 0; c < cols; c++) row[c] = even[c] | (uint32_t)odd[c] << 16;
    else if (2 * p < rows)
      for (int64_t c = 0; c < cols; c++) row[c] = even[c];
    else
      memset(row, 0, (size_t)cols * sizeof *row);
  }
}

/* fp32 lanes rounded to bf16 to nearest, ties to even, in their upper halves (finite values). */
static inline __m512i rounded(__m512 x) {
  __m512i bits = _mm512_castps_si512(x);
  __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  return _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
}

/* to[p][j] = (x[2p][j], x[2p + 1][j]) rounded to bf16, for x (rows × n fp32, n a multiple of 16, rows ld
   apart), rows ≥ `rows` read as 0 up to `padded` (even): P and dS as the left-hand side of Pᵀ · dO and
   dSᵀ · Q, each pair of queries one broadcast. */
static void narrowed_pairs(const float *x, int64_t rows, int64_t n, int64_t ld, int64_t padded, uint32_t *to) {
  const __m512i high = _mm512_set1_epi32((int)0xffff0000u);
  for (int64_t p = 0; 2 * p < padded; p++)
    for (int64_t j = 0; j < n; j += 16) {
      __m512 even = 2 * p < rows ? _mm512_loadu_ps(x + 2 * p * ld + j) : _mm512_setzero_ps();
      __m512 odd = 2 * p + 1 < rows ? _mm512_loadu_ps(x + (2 * p + 1) * ld + j) : _mm512_setzero_ps();
      __m512i two = _mm512_or_si512(_mm512_srli_epi32(rounded(even), 16), _mm512_and_si512(rounded(odd), high));
      _mm512_storeu_si512((void *)(to + p * n + j), two);
    }
}

/* to[p][t] = pair p of row t of x (rows × d, d even), 0 for rows t ≥ `rows` up to `padded`: an operand
   whose sum runs along its rows (K in Q · Kᵀ, V in dO · Vᵀ) transposed, as the right-hand side. */
static void pairs_across(const uint16_t *x, int64_t xt, int64_t rows, int64_t d, int64_t padded, uint32_t *to) {
  for (int64_t t0 = 0; t0 < padded; t0 += 16)
    for (int64_t p = 0; p < d / 2; p++) {
      uint32_t *row = to + p * padded + t0;
      for (int64_t t = 0; t < 16; t++) {
        uint32_t two = 0;
        if (t0 + t < rows) memcpy(&two, x + (t0 + t) * xt + 2 * p, sizeof two);
        row[t] = two;
      }
    }
}

/* to (rows × ld, bf16) = x (rows × n, fp32, rows ld apart), rounded. */
static void narrowed(const float *x, int64_t rows, int64_t n, int64_t ld, uint16_t *to) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < n; j += 16)
      _mm256_storeu_si256((__m256i *)(to + i * ld + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i * ld + j)));
}

/* Σ_c dO[c] · O[c] over d bf16 values, in fp32. */
static inline float dot16(const uint16_t *x, const uint16_t *y, int64_t d) {
  float total = 0;
  for (int64_t c = 0; c < d; c++) total += widen(x[c]) * widen(y[c]);
  return total;
}

/* The forward pass, as triform_attention_forward_f32 with bf16 q, k, v and out. */
int triform_attention_forward_bf16(const place *q, const place *k, const place *v, const mask_place *mask,
                                 const dropout_place *dropout, const place *out, float *lse, int64_t B, int64_t H,
                                 int64_t queries, int64_t keys, int64_t d, int causal, float scale, int threads) {
  shape all = call_shape(queries, keys, (keys + 15) / 16 * 16, d, H, causal, scale, dropout);
  int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && B * H > 1)
  {
    int64_t square = all.queries * all.padded, side = all.d * all.padded;
    float *scores = buffers(square + square / 2 + side);
    uint16_t *p16 = scores ? (uint16_t *)(void *)(scores + square) : 0;
    uint32_t *kp = scores ? (uint32_t *)(void *)(scores + square + square / 2) : 0, *vp = kp;
    if (!scores) failed = 1;
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < B * H; pair++) {
      if (!scores) continue;
      int64_t b = pair / H, h = pair % H;
      shape s = for_pair(all, mask, b, h);
      pairs_across(at16(k, b, h), k->t, keys, d, s.padded, kp);
      product16(queries, s.padded, d, at16(q, b, h), q->t, 2, kp, s.padded, scores, 0, s.padded,
                causal ? COLUMNS_TO_ROW : 0);
      softmax_rows(scores, lse + pair * queries, &s);
      dropped_rows(scores, &s); /* out = dropout(P) · V */
      narrowed(scores, queries, s.padded, s.padded, p16);
      pairs_down(at16(v, b, h), v->t, keys, d, s.padded, vp);
      product16(queries, d, keys, p16, s.padded, 2, vp, d, 0, at16(out, b, h), out->t, causal ? INNER_TO_ROW : 0);
    }
    free(scores);
  }
  return failed ? -1 : 0;
}

/* The backward pass, as triform_attention_backward_f32 with bf16 operands and gradients. */
int triform_attention_backward_bf16(const place *q, const place *k, const place *v, const mask_place *mask,
                                  const dropout_place *dropout, const place *out, const place *dout, const float *lse,
                                  const place *dq, const place *dk, const place *dv, int64_t B, int64_t H,
                                  int64_t queries, int64_t keys, int64_t d, int causal, float scale, int threads) {
  shape all = call_shape(queries, keys, (keys + 15) / 16 * 16, d, H, causal, scale, dropout);
  int64_t even = (queries + 15) / 16 * 16; /* queries rounded up: the transposed operands' rows */
  int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && B * H > 1)
  {
    int64_t square = all.queries * all.padded, side = all.d * (all.padded > even ? all.padded : even);
     /* fp32: p, ds, rows; bf16: a square (row-major or in pairs down); pairs: one operand */
    float *p = buffers(2 * square + all.queries + all.padded * even + side);
    float *ds = p ? p + square : 0, *rows = ds ? ds + square : 0;
    uint16_t *left = rows ? (uint16_t *)(void *)(rows + all.queries) : 0;
    uint32_t *right = p ? (uint32_t *)(void *)(rows + all.queries + all.padded * even) : 0;
    if (!p) failed = 1;
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < B * H; pair++) {
      if (!p) continue;
      int64_t b = pair / H, h = pair % H;
      shape s = for_pair(all, mask, b, h);
      const uint16_t *qp = at16(q, b, h), *kp = at16(k, b, h), *op = at16(out, b, h), *gp = at16(dout, b, h);
      int columns = causal ? COLUMNS_TO_ROW : 0, from_row = causal ? INNER_FROM_ROW : 0;
      pairs_across(kp, k->t, keys, d, s.padded, right);
      product16(queries, s.padded, d, qp, q->t, 2, right, s.padded, p, 0, s.padded, columns);
      probabilities(p, lse + pair * queries, &s);
      /* dS = P ∘ (dO · Vᵀ − rowsum(dO ∘ O)), times the scale the scores were taken at */
      pairs_across(at16(v, b, h), v->t, keys, d, s.padded, right);
      product16(queries, s.padded, d, gp, dout->t, 2, right, s.padded, ds, 0, s.padded, columns);
      for (int64_t i = 0; i < queries; i++) rows[i] = dot16(gp + i * dout->t, op + i * out->t, d);
      dropped_rows(ds, &s); /* the gradient of P from that of dropout(P) */
      scores_gradient(ds, p, rows, &s);
      dropped_rows(p, &s); /* dV = dropout(P)ᵀ · dO */
      uint32_t *down = (uint32_t *)(void *)left; /* dV = Pᵀ · dO */
      narrowed_pairs(p, queries, s.padded, s.padded, even, down);
      pairs_down(gp, dout->t, queries, d, even, right);
      product16(keys, d, queries, left, 2, 2 * s.padded, right, d, 0, at16(dv, b, h), dv->t, from_row);
      narrowed_pairs(ds, queries, s.padded, s.padded, even, down); /* dK = dSᵀ · Q */
      pairs_down(qp, q->t, queries, d, even, right);
      product16(keys, d, queries, left, 2, 2 * s.padded, right, d, 0, at16(dk, b, h), dk->t, from_row);
      narrowed(ds, queries, s.padded, s.padded, left); /* dQ = dS · K */
      pairs_down(kp, k->t, keys, d, s.padded, right);
      product16(queries, d, keys, left, s.padded, 2, right, d, 0, at16(dq, b, h), dq->t, causal ? INNER_TO_ROW : 0);
    }
    free(p);
  }
  return failed ? -1 : 0;
}

#else

int triform_attention_bf16_available(void) { return 0; }

int triform_attention_forward_bf16(void) { return -2; }

int triform_attention_backward_bf16(void) { return -2; }

#endif
