/* A decoding step of one Transformer block in one call, for a few rows of one new token each:

     pre-norm:   x = x + attention(norm(x));  [x = x + cross(norm(x));]  x = x + ff(norm(x))
     post-norm:  x = norm(x + attention(x));  [x = norm(x + cross(x));]  x = norm(x + ff(x))

   attention writes the step's keys and values into the KV cache and attends over it; cross reads the
   source's cached keys and values; ff is act(x · W_upᵀ) · W_downᵀ, gated or not. Each stage is one
   fused product (gemv.c) or one attention step (attention.c), in the order and with the roundings of
   the block's modules. The Python between a block's stages touched more memory than it computed:
   between products that stream megabytes of weights through the caches, it ran from cold caches,
   and a block's step cost several times its calls. */

#include <stdlib.h>

#include "elementwise.h"
#include "kernels.h"

/* What does not change from step to step: the block's sizes and its parameters (kernels/fused_step.py). */
typedef struct {
  int64_t d_model, inner, kv_inner, d_ff, heads, kv_heads, d_head;
  int post_norm, activation, gated, cross;
  float scale, cross_scale;
  int norm_kind[3];
  const void *norm_w[3], *norm_b[3];
  float norm_eps[3];
  const void *w[6], *b[6]; /* qkv, out, cross query, cross out, up (gate and up when gated), down */
  const float *s[6];       /* int8 weights' scales, one per output row (NULL: weights of type T) */
  /* per-head norms of the self-attention's queries and keys (Qwen3's), before rotary positions */
  int head_norm_kind;
  const void *head_norm_w[2], *head_norm_b[2]; /* the queries', the keys' */
  float head_norm_eps[2];
  /* rotary positions (Su et al. 2021, halves rotated): cos and sin (max_len, d_head), fp32 or T */
  int rotary, tables_f32;
  const void *cos, *sin;
  int64_t max_len;
} triform_block;

/* Where the step's cache and masks are: they move (a new generation, beams reordered) between steps. */
typedef struct {
  void *k, *v;
  int64_t kb, kh, kt, vb, vh, vt, position;
  const void *mask;
  int kind;
  int64_t mb, mh, mt;
  const void *ck, *cv;
  int64_t ckb, ckh, ckt, cvb, cvh, cvt, source;
  const void *cmask;
  int ckind;
  int64_t cmb, cmh, cmt;
  const int64_t *positions; /* each row's position, for rotary positions (stride ps) */
  int64_t ps;
} triform_step;

NORMALIZE(f32, float, same, same)
NORMALIZE(bf16, uint16_t, widen, bf16_round)

/* A head's vector h (d values) normalised (kind 0: not) and rotated to `position`, in place, with
   the modules' roundings: (h · cos + rotate_half(h) · sin), each product and the sum rounded. */
#define HEADS(NAME, T, SCALAR, ROUND, STORE)                                                                     \
  static void NAME##_head(T *h, int64_t d, int kind, const T *w, const T *b, float eps, const triform_block *p,  \
                          int64_t position, float *row) {                                                        \
    for (int64_t i = 0; i < d; i++) row[i] = SCALAR(h[i]);                                                       \
    if (kind) NAME##_normalize(row, d, kind, w, b, eps);                                                         \
    if (p->rotary) {                                                                                             \
      int64_t half = d / 2;                                                                                      \
      for (int64_t i = 0; i < d; i++) {                                                                          \
        int64_t at = position * d + i;                                                                           \
        float c = p->tables_f32 ? ((const float *)p->cos)[at] : SCALAR(((const T *)p->cos)[at]);                 \
        float s = p->tables_f32 ? ((const float *)p->sin)[at] : SCALAR(((const T *)p->sin)[at]);                 \
        float turned = i < half ? -row[i + half] : row[i - half];                                                \
        h[i] = STORE(ROUND(ROUND(row[i] * ROUND(c)) + ROUND(turned * ROUND(s))));                                \
      }                                                                                                          \
    } else                                                                                                       \
      for (int64_t i = 0; i < d; i++) h[i] = STORE(row[i]);                                                      \
  }                                                                                                              \
  /* Every query and key head of the step's rows; -2 where a row's position is past the tables. */               \
  static int NAME##_heads(T *qkv, int64_t width, int64_t M, const triform_block *p, const triform_step *s) {     \
    float row[p->d_head];                                                                                        \
    for (int64_t m = 0; m < M; m++) {                                                                            \
      int64_t position = p->rotary ? s->positions[m * s->ps] : 0;                                                \
      if (position < 0 || position >= p->max_len) return -2;                                                     \
      for (int64_t h = 0; h < p->heads + p->kv_heads; h++) {                                                     \
        int key = h >= p->heads;                                                                                 \
        T *head = qkv + m * width + h * p->d_head; /* the keys' heads follow the queries' */                     \
        NAME##_head(head, p->d_head, p->head_norm_kind, p->head_norm_w[key], p->head_norm_b[key],                \
                    p->head_norm_eps[key], p, position, row);                                                    \
      }                                                                                                          \
    }                                                                                                            \
    return 0;                                                                                                    \
  }

HEADS(f32, float, same, same, same)
HEADS(bf16, uint16_t, widen, bf16_round, narrow)

#define BLOCK(NAME, T, BASE, LINEAR, ATT, C)                                                                        \
  int triform_block_step_##NAME(const triform_block *p, const triform_step *s, const T *x, T *out,                \
                                int64_t M, int threads) {                                                         \
    if (p->rotary && M > 0 && !s->positions) return -1;                                                           \
    int64_t d = p->d_model, width = p->inner + 2 * p->kv_inner, groups = p->heads / p->kv_heads;                  \
    /* the residual stream between sublayers, the projections' outputs, attention's, the hidden layer */          \
    size_t size = (size_t)(M * (2 * d + width + p->inner + p->d_ff));                                             \
    T *buffer = malloc(sizeof(T) * size);                                                                         \
    if (!buffer) return -1;                                                                                       \
    T *stream[2] = {buffer, buffer + M * d}, *qkv = buffer + 2 * M * d, *y = qkv + M * width;                     \
    T *hidden = y + M * p->inner;                                                                                 \
    int failed = 0, last = p->cross ? 2 : 1;                                                                      \
    const T *in = x;                                                                                              \
    for (int i = 0; i <= last && !failed; i++) { /* sublayer i, with norm i */                                    \
      int pre = p->post_norm ? 0 : p->norm_kind[i], post = p->post_norm ? p->norm_kind[i] : 0;                    \
      const T *nw = p->norm_w[i], *nb = p->norm_b[i];                                                             \
      float eps = p->norm_eps[i];                                                                                 \
      T *result = i == last ? out : stream[i % 2];                                                                \
      if (i == 0) { /* self-attention: this step's keys and values into the cache, then attended */               \
        failed |= triform_fused_linear_##LINEAR(in, d, pre, nw, nb, eps, p->w[0], p->b[0], p->s[0], 0, 0, 0, 0, 0,  \
                                              0, 0, 0, qkv, width, M, width, d, threads);                         \
        if (!failed && (p->rotary || p->head_norm_kind)) {                                                        \
          int outside = BASE##_heads(qkv, width, M, p, s);                                                        \
          if (outside) {                                                                                          \
            free(buffer);                                                                                         \
            return outside;                                                                                       \
          }                                                                                                       \
        }                                                                                                         \
        failed |= triform_attend_step_##ATT(qkv, width, qkv + p->inner, qkv + p->inner + p->kv_inner, s->k,      \
                                             s->kb, s->kh, s->kt, s->v, s->vb, s->vh, s->vt, s->position,         \
                                             s->mask, s->kind, s->mb, s->mh, s->mt, y, p->inner, M, p->heads,     \
                                             groups, s->position + 1, p->d_head, p->scale, threads);              \
      } else if (i < last) { /* cross-attention over the source's cached keys and values */                       \
        failed |= triform_fused_linear_##LINEAR(in, d, pre, nw, nb, eps, p->w[2], p->b[2], p->s[2], 0, 0, 0, 0, 0,  \
                                              0, 0, 0, qkv, p->inner, M, p->inner, d, threads);                   \
        failed |= triform_attend_step_##ATT(qkv, p->inner, 0, 0, (C *)s->ck, s->ckb, s->ckh, s->ckt,             \
                                             (C *)s->cv, s->cvb, s->cvh, s->cvt, 0, s->cmask, s->ckind, s->cmb,   \
                                             s->cmh, s->cmt, y, p->inner, M, p->heads, groups, s->source,         \
                                             p->d_head, p->cross_scale, threads);                                 \
      }                                                                                                           \
      if (i < last) { /* the attention's output projection, its residual sum (and post-norm) */                   \
        int o = i == 0 ? 1 : 3;                                                                                   \
        failed |= triform_fused_linear_##LINEAR(y, p->inner, 0, 0, 0, 0, p->w[o], p->b[o], p->s[o], 0, 0, in, d,    \
                                              post, nw, nb, eps, result, d, M, d, p->inner, threads);             \
      }                                                                                                           \
      else { /* the feed-forward */                                                                               \
        failed |= triform_fused_linear_##LINEAR(in, d, pre, nw, nb, eps, p->w[4], p->b[4], p->s[4], p->activation,  \
                                              p->gated, 0, 0, 0, 0, 0, 0, hidden, p->d_ff, M, p->d_ff, d,         \
                                              threads);                                                           \
        failed |= triform_fused_linear_##LINEAR(hidden, p->d_ff, 0, 0, 0, 0, p->w[5], p->b[5], p->s[5], 0, 0, in,   \
                                              d, post, nw, nb, eps, result, d, M, d, p->d_ff, threads);           \
      }                                                                                                           \
      in = result;                                                                                                \
    }                                                                                                             \
    free(buffer);                                                                                                 \
    return failed ? -1 : 0;                                                                                       \
  }

BLOCK(f32, float, f32, f32, f32, float)
BLOCK(bf16, uint16_t, bf16, bf16, bf16, uint16_t)
BLOCK(q8, float, f32, q8, f32, float) /* int8 weights (kernels/int8.py's), everything else fp32 */
BLOCK(q8_bf16, float, f32, q8, f32_bf16, uint16_t) /* the same with the KV cache in bf16 */

/* The steps of n blocks in one call, block i's output block i + 1's input: the work of n calls of
   triform_block_step, without the caller's dispatch between them (some 15 µs of Python a block, a
   quarter of a step of the benchmark's int8 GPT at one row). Every block has p[0]'s d_model. */
#define BLOCKS(NAME, T)                                                                                          \
  static int blocks_step_##NAME(int64_t n, const triform_block *const *p, const triform_step *const *s,         \
                                const T *x, T *out, int64_t M, int threads) {                                   \
    int64_t d = n ? p[0]->d_model : 0;                                                                           \
    T *between = n > 1 ? malloc(sizeof(T) * (size_t)(2 * M * d)) : NULL; /* two: a block's input stays read */ \
    if (n > 1 && !between) return -1;                                                                           \
    const T *in = x;                                                                                             \
    int failed = 0;                                                                                              \
    for (int64_t i = 0; i < n && !failed; i++) {                                                                 \
      T *result = i == n - 1 ? out : between + (i % 2) * M * d;                                                  \
      failed = triform_block_step_##NAME(p[i], s[i], in, result, M, threads);                                    \
      in = result;                                                                                               \
    }                                                                                                            \
    free(between);                                                                                               \
    return failed;                                                                                               \
  }

BLOCKS(f32, float)
BLOCKS(bf16, uint16_t)
BLOCKS(q8, float)
BLOCKS(q8_bf16, float)

/* What a stack computes around its blocks (kernels/fused_step.py describes it): the embeddings of
   the step's tokens, token row (vocab, d) times scale, plus the row of their position in a table of
   max_len rows (or none: rotary positions are the blocks'), then a norm (kind 0: none); after the
   blocks, the final norm of a pre-norm stack (kind 0: none). Tables and parameters of type T. */
typedef struct {
  const void *token, *position;
  int64_t vocab, max_len;
  float scale;
  int norm_kind, final_kind;
  const void *norm_w, *norm_b, *final_w, *final_b;
  float norm_eps, final_eps;
} triform_stack;

#define OUTSIDE_VOCABULARY -3

/* A stack's decoding step in one call: the M tokens `ids` (each row's position at positions[m · ps])
   embedded, the n blocks, the final norm, into out (M, d), with the modules' roundings (each
   product, sum and norm rounded to T). Returns 0, -1 out of memory, -2 a position past the table
   (OUTSIDE_TABLES of kernels/native.py), OUTSIDE_VOCABULARY a token id past the vocabulary. */
#define STACK(NAME, T, BASE, SCALAR, ROUND, STORE)                                                                \
  int triform_stack_step_##NAME(const triform_stack *e, const int64_t *ids, const int64_t *positions,             \
                                int64_t ps, int64_t n, const triform_block *const *p,                             \
                                const triform_step *const *s, T *out, int64_t M, int threads) {                   \
    int64_t d = p[0]->d_model;                                                                                    \
    for (int64_t m = 0; m < M; m++) {                                                                             \
      if (ids[m] < 0 || ids[m] >= e->vocab) return OUTSIDE_VOCABULARY;                                           \
      if (e->position && (positions[m * ps] < 0 || positions[m * ps] >= e->max_len)) return -2;                 \
    }                                                                                                             \
    T *x = malloc(sizeof(T) * (size_t)(M * d));                                                                   \
    float *row = malloc(sizeof(float) * (size_t)d);                                                              \
    if (!x || !row) {                                                                                             \
      free(x), free(row);                                                                                         \
      return -1;                                                                                                  \
    }                                                                                                             \
    for (int64_t m = 0; m < M; m++) {                                                                             \
      const T *token = (const T *)e->token + ids[m] * d;                                                         \
      for (int64_t i = 0; i < d; i++) row[i] = SCALAR(token[i]);                                                 \
      if (e->scale != 1.0f)                                                                                       \
        for (int64_t i = 0; i < d; i++) row[i] = ROUND(row[i] * e->scale);                                       \
      if (e->position) {                                                                                          \
        const T *at = (const T *)e->position + positions[m * ps] * d;                                            \
        for (int64_t i = 0; i < d; i++) row[i] = ROUND(row[i] + SCALAR(at[i]));                                  \
      }                                                                                                           \
      if (e->norm_kind) BASE##_normalize(row, d, e->norm_kind, e->norm_w, e->norm_b, e->norm_eps);              \
      for (int64_t i = 0; i < d; i++) x[m * d + i] = STORE(row[i]);                                              \
    }                                                                                                             \
    int failed = blocks_step_##NAME(n, p, s, x, out, M, threads);                                               \
    for (int64_t m = 0; m < M && !failed && e->final_kind; m++) {                                                 \
      for (int64_t i = 0; i < d; i++) row[i] = SCALAR(out[m * d + i]);                                           \
      BASE##_normalize(row, d, e->final_kind, e->final_w, e->final_b, e->final_eps);                            \
      for (int64_t i = 0; i < d; i++) out[m * d + i] = STORE(row[i]);                                            \
    }                                                                                                             \
    free(x), free(row);                                                                                           \
    return failed;                                                                                                \
  }

STACK(f32, float, f32, same, same, same)
STACK(bf16, uint16_t, bf16, widen, bf16_round, narrow)
STACK(q8, float, f32, same, same, same)
STACK(q8_bf16, float, f32, same, same, same)
