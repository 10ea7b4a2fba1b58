/* softmax(Q · Kᵀ · scale) · V over many queries in fp32, and its backward pass: the attention of a
   training step (or of a prompt) with no mask or a causal one, for kernels/attention.py.

   Each (batch, head) pair is one thread's work from start to end: its keys transposed, its scores
   (queries × keys) and, going backward, their gradients all stay in that core's caches, the products
   between them done by one register-tiled kernel (`product`) and the softmax between them by
   elementwise.h's exponential. Only a row's log-sum-exp is kept for the backward pass, which forms
   the scores again (as flash attention does) rather than keeping queries × keys of them a layer.
   A causal mask skips the tiles wholly above the diagonal, half of every product; another mask (a
   padding mask, a bias) is applied to the scores as they are scaled. torch's fused
   kernel (flash attention on a CPU) took 10 ms forward and 35 ms forward and backward for 16 × 6
   heads of 256 queries and keys of 64 (the benchmark's GPT layer, AMD EPYC Zen 5, 2 threads), its
   batched products 160 GFLOP/s where the layer's linear products ran at 420. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "training_attention.h"

/* c[r][0 .. NV · WIDE) (+)= Σ_k A(r, k) · b[k][..] for the R rows of one tile, in R · NV sums held in
   registers: A(r, k) at a[r · ar + k · ak] (a row-major or a transposed operand), row k of b at
   b + k · bk, row r of c at c + r · cr. */
#define TILE(R, NV)                                                                                       \
  static void tile_##R##_##NV(int64_t n, const float *a, int64_t ar, int64_t ak, const float *b,         \
                              int64_t bk, float *c, int64_t cr, int add) {                               \
    wide sums[R][NV];                                                                                     \
    for (int r = 0; r < (R); r++)                                                                         \
      for (int j = 0; j < (NV); j++) sums[r][j] = (wide){0};                                              \
    for (int64_t k = 0; k < n; k++) {                                                                     \
      wide x[NV];                                                                                         \
      for (int j = 0; j < (NV); j++) x[j] = load_wide(b + k * bk + j * WIDE);                             \
      for (int r = 0; r < (R); r++) {                                                                     \
        float s = a[r * ar + k * ak];                                                                     \
        for (int j = 0; j < (NV); j++) sums[r][j] += s * x[j];                                            \
      }                                                                                                   \
    }                                                                                                     \
    for (int r = 0; r < (R); r++)                                                                         \
      for (int j = 0; j < (NV); j++) {                                                                    \
        float *p = c + r * cr + j * WIDE;                                                                 \
        store_wide(p, add ? load_wide(p) + sums[r][j] : sums[r][j]);                                      \
      }                                                                                                   \
  }

#define TILES(NV) TILE(1, NV) TILE(2, NV) TILE(3, NV) TILE(4, NV) TILE(5, NV) TILE(6, NV) TILE(7, NV) TILE(8, NV)
TILES(1)
TILES(2)

typedef void (*tile_kernel)(int64_t, const float *, int64_t, int64_t, const float *, int64_t, float *, int64_t,
                            int);
static const tile_kernel TILE_KERNELS[2][TILE_ROWS] = {
    {tile_1_1, tile_2_1, tile_3_1, tile_4_1, tile_5_1, tile_6_1, tile_7_1, tile_8_1},
    {tile_1_2, tile_2_2, tile_3_2, tile_4_2, tile_5_2, tile_6_2, tile_7_2, tile_8_2},
};


/* c (m × n) = A (m × inner) · b (inner × n), n a multiple of WIDE, strides as for TILE; `part` the share a
   causal mask leaves (whatever it leaves out of c is not written). */
static void product(int64_t m, int64_t n, int64_t inner, const float *a, int64_t ar, int64_t ak, const float *b,
                    int64_t bk, float *c, int64_t cr, int part) {
  for (int64_t i = 0; i < m; i += TILE_ROWS) {
    int rows = m - i < TILE_ROWS ? (int)(m - i) : TILE_ROWS;
    int64_t last = i + rows, columns = n, from = 0, to = inner;
    if (part == COLUMNS_TO_ROW) columns = (last + WIDE - 1) / WIDE * WIDE < n ? (last + WIDE - 1) / WIDE * WIDE : n;
    if (part == INNER_TO_ROW) to = last < inner ? last : inner;
    if (part == INNER_FROM_ROW) from = i < inner ? i : inner;
    for (int64_t j = 0; j < columns; j += 2 * WIDE) {
      int halves = columns - j >= 2 * WIDE ? 2 : 1;
      TILE_KERNELS[halves - 1][rows - 1](to - from, a + i * ar + from * ak, ar, ak, b + from * bk + j, bk,
                                         c + i * cr + j, cr, 0);
    }
  }
}


/* to[d][t] = from[t][d] for t < keys, 0 up to padded: a pair's keys or values as the right-hand side of
   a product with keys as its columns. By blocks of WIDE rows, which stay in the first-level cache while
   each of their columns is read: a whole column at a time read a pair's rows from the second level. */
static void transpose(const float *from, int64_t ft, float *to, const shape *s) {
  for (int64_t t0 = 0; t0 < s->padded; t0 += WIDE) {
    int64_t rows = s->keys - t0 < WIDE ? s->keys - t0 : WIDE;
    for (int64_t d = 0; d < s->d; d++) {
      float *row = to + d * s->padded + t0;
      for (int64_t t = 0; t < rows; t++) row[t] = from[(t0 + t) * ft + d];
      for (int64_t t = rows > 0 ? rows : 0; t < WIDE; t++) row[t] = 0;
    }
  }
}

/* Σ_c x[c] · y[c] over d values, d a multiple of WIDE. */
static inline float dot(const float *x, const float *y, int64_t d) {
  wide sum = {0};
  for (int64_t c = 0; c < d; c += WIDE) sum += load_wide(x + c) * load_wide(y + c);
  float total = 0;
  for (int j = 0; j < WIDE; j++) total += sum[j];
  return total;
}


/* scores = Q · Kᵀ for one pair, into a queries × padded buffer (kt: K transposed, padded). */
static void scores_of(const float *q, int64_t qt, const float *kt, float *scores, const shape *s) {
  product(s->queries, s->padded, s->d, q, qt, 1, kt, s->padded, scores, s->padded, s->causal ? COLUMNS_TO_ROW : 0);
}


/* The forward pass: out (B, H, queries, d) and lse (B, H, queries, contiguous) from q, k, v (B, H,
   queries or keys, d); every operand at its own strides, d contiguous and a multiple of WIDE. -1: no
   memory. */
int triform_attention_forward_f32(const place *q, const place *k, const place *v, const mask_place *mask,
                                 const dropout_place *dropout, const place *out, float *lse, int64_t B, int64_t H,
                                 int64_t queries, int64_t keys, int64_t d, int causal, float scale, int threads) {
  shape all = call_shape(queries, keys, (keys + WIDE - 1) / WIDE * WIDE, d, H, causal, scale, dropout);
  int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && B * H > 1)
  {
    float *kt = buffers(all.d * all.padded + all.queries * all.padded);
    float *scores = kt ? kt + all.d * all.padded : 0;
    if (!kt) failed = 1;
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < B * H; pair++) {
      if (!kt) continue;
      int64_t b = pair / H, h = pair % H;
      shape s = for_pair(all, mask, b, h);
      transpose(at(k, b, h), k->t, kt, &s);
      scores_of(at(q, b, h), q->t, kt, scores, &s);
      softmax_rows(scores, lse + pair * queries, &s);
      dropped_rows(scores, &s); /* out = dropout(P) · V */
      product(queries, d, keys, scores, s.padded, 1, at(v, b, h), v->t, at(out, b, h), out->t,
              causal ? INNER_TO_ROW : 0);
    }
    free(kt);
  }
  return failed ? -1 : 0;
}

/* The backward pass: dq, dk, dv (written whole) from the forward pass's inputs, its out and lse, and
   the gradient of out (dout), each at its own strides. -1: no memory. */
int triform_attention_backward_f32(const place *q, const place *k, const place *v, const mask_place *mask,
                                  const dropout_place *dropout, const place *out, const place *dout, const float *lse,
                                  const place *dq, const place *dk, const place *dv, int64_t B, int64_t H,
                                  int64_t queries, int64_t keys, int64_t d, int causal, float scale, int threads) {
  shape all = call_shape(queries, keys, (keys + WIDE - 1) / WIDE * WIDE, d, H, causal, scale, dropout);
  int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && B * H > 1)
  {
    int64_t square = all.queries * all.padded, side = all.d * all.padded;
    float *kt = buffers(2 * side + 2 * square + all.queries);
    float *vt = kt ? kt + side : 0, *p = vt ? vt + side : 0, *ds = p ? p + square : 0;
    float *rows = ds ? ds + square : 0;
    if (!kt) failed = 1;
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < B * H; pair++) {
      if (!kt) continue;
      int64_t b = pair / H, h = pair % H;
      shape s = for_pair(all, mask, b, h);
      const float *qp = at(q, b, h), *kp = at(k, b, h), *op = at(out, b, h), *gp = at(dout, b, h);
      transpose(kp, k->t, kt, &s);
      transpose(at(v, b, h), v->t, vt, &s);
      scores_of(qp, q->t, kt, p, &s);
      probabilities(p, lse + pair * queries, &s);
      /* dS = P ∘ (dO · Vᵀ − rowsum(dO ∘ O)), times the scale the scores were taken at */
      product(queries, s.padded, d, gp, dout->t, 1, vt, s.padded, ds, s.padded, causal ? COLUMNS_TO_ROW : 0);
      for (int64_t i = 0; i < queries; i++) rows[i] = dot(gp + i * dout->t, op + i * out->t, d);
      dropped_rows(ds, &s); /* the gradient of P from that of dropout(P) */
      scores_gradient(ds, p, rows, &s);
      dropped_rows(p, &s); /* dV = dropout(P)ᵀ · dO */
      int part = causal ? INNER_FROM_ROW : 0;
      product(keys, d, queries, p, 1, s.padded, gp, dout->t, at(dv, b, h), dv->t, part);  /* dV = Pᵀ · dO */
      product(keys, d, queries, ds, 1, s.padded, qp, q->t, at(dk, b, h), dk->t, part);    /* dK = dSᵀ · Q */
      product(queries, d, keys, ds, s.padded, 1, kp, k->t, at(dq, b, h), dq->t, causal ? INNER_TO_ROW : 0);
    }
    free(kt);
  }
  return failed ? -1 : 0;
}
