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
} triform_step;

#define BLOCK(NAME, T)                                                                                              \
  int triform_block_step_##NAME(const triform_block *p, const triform_step *s, const T *x, T *out,                  \
                                int64_t M, int threads) {                                                           \
    int64_t d = p->d_model, width = p->inner + 2 * p->kv_inner, groups = p->heads / p->kv_heads;                    \
    /* the residual stream between sublayers, the projections' outputs, attention's, the hidden layer */            \
    size_t size = (size_t)(M * (2 * d + width + p->inner + p->d_ff));                                               \
    T *buffer = malloc(sizeof(T) * size);                                                                           \
    if (!buffer) return -1;                                                                                         \
    T *stream[2] = {buffer, buffer + M * d}, *qkv = buffer + 2 * M * d, *y = qkv + M * width;                       \
    T *hidden = y + M * p->inner;                                                                                   \
    int failed = 0, last = p->cross ? 2 : 1;                                                                        \
    const T *in = x;                                                                                                \
    for (int i = 0; i <= last && !failed; i++) { /* sublayer i, with norm i */                                      \
      int pre = p->post_norm ? 0 : p->norm_kind[i], post = p->post_norm ? p->norm_kind[i] : 0;                      \
      const T *nw = p->norm_w[i], *nb = p->norm_b[i];                                                               \
      float eps = p->norm_eps[i];                                                                                   \
      T *result = i == last ? out : stream[i % 2];                                                                  \
      if (i == 0) { /* self-attention: this step's keys and values into the cache, then attended */                 \
        failed |= triform_fused_linear_##NAME(in, d, pre, nw, nb, eps, p->w[0], p->b[0], 0, 0, 0, 0, 0, 0, 0, 0,    \
                                              qkv, width, M, width, d, threads);                                    \
        failed |= triform_attend_step_##NAME(qkv, width, qkv + p->inner, qkv + p->inner + p->kv_inner, s->k,        \
                                             s->kb, s->kh, s->kt, s->v, s->vb, s->vh, s->vt, s->position,           \
                                             s->mask, s->kind, s->mb, s->mh, s->mt, y, p->inner, M, p->heads,       \
                                             groups, s->position + 1, p->d_head, p->scale, threads);                \
      } else if (i < last) { /* cross-attention over the source's cached keys and values */                         \
        failed |= triform_fused_linear_##NAME(in, d, pre, nw, nb, eps, p->w[2], p->b[2], 0, 0, 0, 0, 0, 0, 0, 0,    \
                                              qkv, p->inner, M, p->inner, d, threads);                              \
        failed |= triform_attend_step_##NAME(qkv, p->inner, 0, 0, (T *)s->ck, s->ckb, s->ckh, s->ckt,               \
                                             (T *)s->cv, s->cvb, s->cvh, s->cvt, 0, s->cmask, s->ckind, s->cmb,     \
                                             s->cmh, s->cmt, y, p->inner, M, p->heads, groups, s->source,           \
                                             p->d_head, p->cross_scale, threads);                                   \
      }                                                                                                             \
      if (i < last) /* the attention's output projection, its residual sum (and post-norm) */                       \
        failed |= triform_fused_linear_##NAME(y, p->inner, 0, 0, 0, 0, p->w[i == 0 ? 1 : 3], p->b[i == 0 ? 1 : 3],  \
                                              0, 0, in, d, post, nw, nb, eps, result, d, M, d, p->inner, threads);  \
      else { /* the feed-forward */                                                                                 \
        failed |= triform_fused_linear_##NAME(in, d, pre, nw, nb, eps, p->w[4], p->b[4], p->activation, p->gated,   \
                                              0, 0, 0, 0, 0, 0, hidden, p->d_ff, M, p->d_ff, d, threads);           \
        failed |= triform_fused_linear_##NAME(hidden, p->d_ff, 0, 0, 0, 0, p->w[5], p->b[5], 0, 0, in, d, post,     \
                                              nw, nb, eps, result, d, M, d, p->d_ff, threads);                      \
      }                                                                                                             \
      in = result;                                                                                                  \
    }                                                                                                               \
    free(buffer);                                                                                                   \
    return failed ? -1 : 0;                                                                                         \
  }

BLOCK(f32, float)
BLOCK(bf16, uint16_t)
