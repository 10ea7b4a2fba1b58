/* y = x · Wᵀ + b for a few rows of x (a decoding step's batch or beams), W (N, K) row-major: in fp32,
   and in bf16 (bf16 operands, products summed in fp32, the result rounded to bf16 once).

   At a few rows a product reads its whole weight from memory to do a few multiply-adds per weight,
   so its speed is the speed of that read. The library kernels torch calls there ran at half of it or
   less on the machines measured (their matrix-vector paths use one thread, their matrix paths are
   tuned for many rows). Here the threads split W's rows between them; each reads its rows front to
   back, the access memory's prefetchers follow best, and multiplies each row, while it is in L1, by
   up to four rows of x at once, with four sums in flight to hide the multiply-add's latency.

   Built by kernels/native.py with this machine's C compiler for this CPU (-march=native); the vector
   type (simd.h) is GCC's and Clang's vector extension, which they lower to the CPU's SIMD instructions. */

#include <math.h>
#include <stdlib.h>

#include "bf16.h"
#include "elementwise.h"
#include "int8.h"
#include "kernels.h"
#include "simd.h"

/* The kernels for weights of type T (LOAD: LANES of them as fp32; SCALAR: one), x always in fp32. */
#define KERNELS(NAME, T, LOAD, SCALAR)                                                                    \
  /* Row w against one row p of x: four sums in flight over consecutive stretches of k. */                \
  static inline float NAME##_dot1(const float *p, const T *w, int64_t K) {                                \
    vec a = {0}, b = {0}, c = {0}, d = {0};                                                               \
    int64_t k = 0;                                                                                        \
    for (; k + 4 * LANES <= K; k += 4 * LANES) {                                                          \
      a += load_f32(p + k) * LOAD(w + k);                                                                 \
      b += load_f32(p + k + LANES) * LOAD(w + k + LANES);                                                 \
      c += load_f32(p + k + 2 * LANES) * LOAD(w + k + 2 * LANES);                                         \
      d += load_f32(p + k + 3 * LANES) * LOAD(w + k + 3 * LANES);                                         \
    }                                                                                                     \
    for (; k + LANES <= K; k += LANES) a += load_f32(p + k) * LOAD(w + k);                                \
    float s = total((a + b) + (c + d));                                                                   \
    for (; k < K; k++) s += p[k] * SCALAR(w[k]);                                                          \
    return s;                                                                                             \
  }                                                                                                       \
  /* Row w against rows p, p + ldx (two sums each): w's lanes loaded once for both. */                    \
  static inline void NAME##_dot2(const float *p, int64_t ldx, const T *w, int64_t K, float *s) {          \
    const float *q = p + ldx;                                                                             \
    vec a = {0}, b = {0}, c = {0}, d = {0};                                                               \
    int64_t k = 0;                                                                                        \
    for (; k + 2 * LANES <= K; k += 2 * LANES) {                                                          \
      vec w0 = LOAD(w + k), w1 = LOAD(w + k + LANES);                                                     \
      a += load_f32(p + k) * w0, b += load_f32(p + k + LANES) * w1;                                       \
      c += load_f32(q + k) * w0, d += load_f32(q + k + LANES) * w1;                                       \
    }                                                                                                     \
    s[0] = total(a + b), s[1] = total(c + d);                                                             \
    for (; k < K; k++) s[0] += p[k] * SCALAR(w[k]), s[1] += q[k] * SCALAR(w[k]);                          \
  }                                                                                                       \
  /* Row w against four rows of x, one sum each. */                                                       \
  static inline void NAME##_dot4(const float *p, int64_t ldx, const T *w, int64_t K, float *s) {          \
    const float *p1 = p + ldx, *p2 = p + 2 * ldx, *p3 = p + 3 * ldx;                                      \
    vec a = {0}, b = {0}, c = {0}, d = {0};                                                               \
    int64_t k = 0;                                                                                        \
    for (; k + LANES <= K; k += LANES) {                                                                  \
      vec v = LOAD(w + k);                                                                                \
      a += load_f32(p + k) * v, b += load_f32(p1 + k) * v, c += load_f32(p2 + k) * v;                     \
      d += load_f32(p3 + k) * v;                                                                          \
    }                                                                                                     \
    s[0] = total(a), s[1] = total(b), s[2] = total(c), s[3] = total(d);                                   \
    for (; k < K; k++) {                                                                                  \
      float v = SCALAR(w[k]);                                                                             \
      s[0] += p[k] * v, s[1] += p1[k] * v, s[2] += p2[k] * v, s[3] += p3[k] * v;                          \
    }                                                                                                     \
  }                                                                                                       \
  /* Output row n of every row of x; the result in fp32 (y) or rounded to bf16 (y16). Unused for bf16   \
     where the products take bf16 pairs (BF16_PAIRS), which Clang would warn of. */                       \
  __attribute__((unused)) static inline void NAME##_column(const float *x, int64_t ldx, const T *w, float b,  \
                                                           float *y, uint16_t *y16, int64_t ldy, int64_t M,     \
                                                           int64_t K) {                                         \
    float s[4];                                                                                           \
    int64_t m = 0;                                                                                        \
    for (; m < M;) {                                                                                      \
      int rows = M - m >= 4 ? 4 : M - m >= 2 ? 2 : 1;                                                     \
      if (rows == 4) NAME##_dot4(x + m * ldx, ldx, w, K, s);                                              \
      else if (rows == 2) NAME##_dot2(x + m * ldx, ldx, w, K, s);                                         \
      else s[0] = NAME##_dot1(x + m * ldx, w, K);                                                         \
      for (int i = 0; i < rows; i++, m++) {                                                               \
        if (y16) y16[m * ldy] = narrow(s[i] + b);                                                         \
        else y[m * ldy] = s[i] + b;                                                                       \
      }                                                                                                   \
    }                                                                                                     \
  }

KERNELS(f32, float, load_f32, same)
KERNELS(bf16, uint16_t, load_bf16, widen)

/* x (M, K) with row stride ldx, W (N, K) contiguous, bias (N) or NULL, y (M, N) with row stride ldy. */
void triform_gemv_f32(const float *x, int64_t ldx, const float *W, const float *bias, float *y, int64_t ldy,
                      int64_t M, int64_t N, int64_t K, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t n = 0; n < N; n++) f32_column(x, ldx, W + n * K, bias ? bias[n] : 0, y + n, 0, ldy, M, K);
}

/* As triform_gemv_f32, every tensor bf16 (its bits as uint16_t): x is widened to fp32 once, so that
   each weight row meets fp32 rows of x (or, with AVX512-BF16, multiplied as it is: bf16.h). Returns 0,
   or -1 where that copy of x could not be had. */
int triform_gemv_bf16(const uint16_t *x, int64_t ldx, const uint16_t *W, const uint16_t *bias, uint16_t *y,
                      int64_t ldy, int64_t M, int64_t N, int64_t K, int threads) {
#ifdef BF16_PAIRS /* x as it is: the products take bf16 pairs (bf16.h) */
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t n = 0; n < N; n++)
    bf16_pairs_column(x, ldx, W + n * K, bias ? widen(bias[n]) : 0, 0, y + n, ldy, M, K);
  return 0;
#else
  float *rows = malloc(sizeof(float) * (size_t)(M * K > 0 ? M * K : 1));
  if (!rows) return -1;
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < K; k++) rows[m * K + k] = widen(x[m * ldx + k]);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t n = 0; n < N; n++)
    bf16_column(rows, K, W + n * K, bias ? widen(bias[n]) : 0, 0, y + n, ldy, M, K);
  free(rows);
  return 0;
#endif
}

/* A decoding step's product with the element-wise work around it, in one call:
     y = post( residual + act( pre(x) · Wᵀ + b ) )
   pre and post a LayerNorm or an RMSNorm over each row (or neither), act none, relu, gelu (erf),
   gelu (tanh) or silu, applied to the first N outputs times the last N where the product is gated
   (W has 2N rows: SwiGLU's gate then up), and the residual added before the post-norm (post-norm
   blocks) or with none after it (pre-norm blocks): each of a decoding block's products (block.c).
   Everything is computed in fp32; a bf16 model's values are rounded to bf16 wherever its modules
   round them (each norm's, product's, activation's and sum's result), so the step computes what the
   modules compute. With `scales` (int8 weights), each row of x is rounded to int8 with its own scale
   s_x after the pre-norm, and output n is s_x · scales[n] · (q(x) · Q[n]) + b[n], the int8 products
   summed exactly (int8.h), as CTranslate2's and fbgemm's int8 products round the activations too (they
   with one scale per call). Returns 0, or -1 where the row buffers could not
   be had. */

NORMALIZE(f32, float, same, same)
NORMALIZE(bf16, uint16_t, widen, bf16_round)

/* A type's products of the prepared rows by weight row n, into out + n: fp32 or bf16 weights against
   the fp32 rows; int8 weights against the rows rounded to int8 (int8.h), then scaled. */
#define FLOAT_COLUMN(KERNEL, n, b) KERNEL##_column(rows, K, W + (n) * K, b, out + (n), 0, ldo, M, K)
#define ONE_BY_ONE(COLUMN, KERNEL, n, C, SCALAR) \
  for (int c = 0; c < (C); c++) COLUMN(KERNEL, (n) + c, bias ? SCALAR(bias[(n) + c]) : 0)
#define FLOAT_COLUMNS(KERNEL, n, C, SCALAR) ONE_BY_ONE(FLOAT_COLUMN, KERNEL, n, C, SCALAR)
#ifdef BF16_PAIRS /* the rows narrowed to bf16 (they hold bf16 values: no loss) for bf16.h's pairs */
#define BF16_PREPARE(m) for (int64_t k = 0; k < K; k++) narrowed[(m) * K + k] = narrow(rows[(m) * K + k])
#define BF16_COLUMN(KERNEL, n, b) bf16_pairs_column(narrowed, K, W + (n) * K, b, out + (n), 0, ldo, M, K)
#define BF16_COLUMNS(KERNEL, n, C, SCALAR) ONE_BY_ONE(BF16_COLUMN, KERNEL, n, C, SCALAR)
#else
#define BF16_PREPARE(m)
#define BF16_COLUMNS FLOAT_COLUMNS
#endif
#define INT8_PREPARE(m) row_scales[m] = q8_quantize_row(rows + (m) * K, K, quantized + (m) * K, row_offsets + (m))
#define NO_PREPARE(m)
#define INT8_COLUMNS(KERNEL, n, C, SCALAR) \
  q8_columns(quantized, row_scales, row_offsets, K, W + (n) * K, scales + (n), bias ? bias + (n) : 0, out + (n), \
             ldo, M, C)

#define FINISH_BLOCK 64 /* outputs computed, then finished, together (a multiple of four) */

/* Outputs first .. last of a row r (its raw products) as the modules give them: rounded as they round,
   the activation (times the gate's partner r[N + j] where gated), the residual added; then stored
   into y, or left in r for a post-norm (y NULL). */
#define FINISH(NAME, T, SCALAR, ROUND, STORE)                                                            \
  static inline void NAME##_finish(float *r, int64_t first, int64_t last, int64_t N, int gated, int act, \
                                   const T *residual, T *y) {                                           \
    for (int64_t j = first; j < last; j++) r[j] = ROUND(r[j]);                                          \
    if (act || gated) activate_row(act, r + first, last - first);                                      \
    if (gated)                                                                                          \
      for (int64_t j = first; j < last; j++) r[j] = ROUND(ROUND(r[j]) * ROUND(r[N + j]));              \
    else if (act)                                                                                       \
      for (int64_t j = first; j < last; j++) r[j] = ROUND(r[j]);                                        \
    if (residual)                                                                                       \
      for (int64_t j = first; j < last; j++) r[j] = ROUND(SCALAR(residual[j]) + r[j]);                  \
    if (y)                                                                                              \
      for (int64_t j = first; j < last; j++) y[j] = STORE(r[j]);                                        \
  }
FINISH(f32, float, same, same, same)
FINISH(bf16, uint16_t, widen, bf16_round, narrow)
FINISH(q8, float, same, same, same)

#define FUSED(NAME, T, WT, KERNEL, PREPARE, COLUMNS, NORM, SCALAR, ROUND, STORE)                         \
  FUSED_LINEAR(NAME, T, WT) {                                                                           \
    int64_t outputs = gated ? 2 * N : N; /* rows of W */                                                \
    size_t floats = (size_t)(M * K + M * outputs + 2 * M + 1);                                          \
    float *rows = malloc(sizeof(float) * floats + sizeof(uint16_t) * (size_t)(M * K));                  \
    if (!rows) return -1;                                                                               \
    float *raw = rows + M * K, *row_scales = raw + M * outputs;                                         \
    int32_t *row_offsets = (int32_t *)(row_scales + M);                                                 \
    int8_t *quantized = (int8_t *)(rows + floats); /* the rows as PREPARE leaves them */                \
    uint16_t *narrowed = (uint16_t *)(rows + floats);                                                   \
    (void)row_scales, (void)row_offsets, (void)quantized, (void)narrowed, (void)scales; /* per type */  \
    /* A product with nothing after it, into an fp32 y, is written there as it is computed. */          \
    int direct = sizeof(T) == sizeof(float) && !gated && !act && !residual && !post;                    \
    float *out = direct ? (float *)y : raw;                                                             \
    int64_t ldo = direct ? ldy : outputs;                                                               \
    for (int64_t m = 0; m < M; m++) {                                                                   \
      for (int64_t k = 0; k < K; k++) rows[m * K + k] = SCALAR(x[m * ldx + k]);                         \
      if (pre) NORM##_normalize(rows + m * K, K, pre, pre_w, pre_b, pre_eps);                           \
      PREPARE(m);                                                                                       \
    }                                                                                                   \
    /* Outputs are computed in blocks (in fours, which the int8 kernel computes together; at most       \
       FINISH_BLOCK, fewer where the threads would otherwise lack blocks) and each block finished where  \
       it was computed (its gates' partners j + N with it), so that the activations run on every thread, \
       over a row's stretch of the block as vectors; only a post-norm, over whole rows, waits for all. */ \
    int64_t block = ((N + threads - 1) / (threads > 1 ? threads : 1) + 3) / 4 * 4;                     \
    block = block < FINISH_BLOCK ? block : FINISH_BLOCK;                                                \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1)")                  \
    for (int64_t first = 0; first < N; first += block) {                                                \
      int64_t last = first + block < N ? first + block : N;                                             \
      for (int64_t g = first; g < last; g += 4) {                                                       \
        int C = last - g >= 4 ? 4 : (int)(last - g);                                                    \
        for (int64_t n = g; n < outputs; n += N) /* these, and their gates' partners */                 \
          COLUMNS(KERNEL, n, C, SCALAR);                                                                \
      }                                                                                                 \
      for (int64_t m = 0; m < M && !direct; m++)                                                        \
        NAME##_finish(raw + m * outputs, first, last, N, gated, act, residual ? residual + m * ldr : 0, \
                      post ? 0 : y + m * ldy);                                                          \
    }                                                                                                   \
    if (post)                                                                                           \
      for (int64_t m = 0; m < M; m++) {                                                                 \
        float *r = raw + m * outputs;                                                                   \
        NORM##_normalize(r, N, post, post_w, post_b, post_eps);                                         \
        for (int64_t j = 0; j < N; j++) y[m * ldy + j] = STORE(r[j]);                                   \
      }                                                                                                 \
    free(rows);                                                                                         \
    return 0;                                                                                           \
  }

FUSED(f32, float, float, f32, NO_PREPARE, FLOAT_COLUMNS, f32, same, same, same)
FUSED(bf16, uint16_t, uint16_t, bf16, BF16_PREPARE, BF16_COLUMNS, bf16, widen, bf16_round, narrow)
FUSED(q8, float, int8_t, q8, INT8_PREPARE, INT8_COLUMNS, f32, same, same, same) /* int8 weights and rows; fp32 around */
