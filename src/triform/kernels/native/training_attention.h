/* What the fp32 and bf16 training attentions (training_attention.c, training_attention_bf16.c) share:
   a (batch, head) pair's sizes and mask, the softmax of its scores in fp32, and the operands' places. */

#ifndef TRIFORM_TRAINING_ATTENTION_H
#define TRIFORM_TRAINING_ATTENTION_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "dropout.h"
#include "elementwise.h"

enum { TILE_ROWS = 8 };

/* Which part of a product a causal mask leaves, for the tile of rows i0 .. i0 + TILE_ROWS:
   COLUMNS_TO_ROW: columns up to the tile's last row (scores: key j ≤ query i);
   INNER_TO_ROW: the sum over k up to the tile's last row (P · V, dS · K: key k ≤ query i);
   INNER_FROM_ROW: the sum over k from the tile's first row (Pᵀ · dO, dSᵀ · Q: query k ≥ key i). */
enum { WHOLE = 0, COLUMNS_TO_ROW = 1, INNER_TO_ROW = 2, INNER_FROM_ROW = 3 };

/* A mask over (B, H, queries, keys) at strides b, h, q, k (0 where broadcast): bool (uint8, nonzero:
   attended) or fp32 added to the scaled scores. */
typedef struct {
  const void *p;
  int kind; /* 1: bool, 2: added */
  int64_t b, h, q, k;
} mask_place;

/* The dropout of one call on the probabilities: P[i][j] of pair (b, h) kept where draw(its index in
   (B, H, queries, keys) order, seed) ≥ dropped (of 2¹⁵), times kept_scale; dropped 0: none. */
typedef struct {
  uint32_t dropped;
  float kept_scale;
  uint64_t seed;
} dropout_place;

/* One (batch, head) pair's sizes, and its mask: element (i, j) at allowed or bias [i · mq + j · mk];
   its dropout, base its first element's index. */
typedef struct {
  int64_t queries, keys, padded, d; /* padded: keys rounded up to WIDE, a scores row's length */
  int causal;
  float scale;
  const uint8_t *allowed;
  const float *bias;
  int64_t mq, mk;
  dropout_place dropout;
  int64_t base, heads;
} shape;

/* What every pair of a call shares: sizes (padded: keys rounded up to the kernel's vector), heads, mask
   kind, scale, and its dropout (none for 0). */
static inline shape call_shape(int64_t queries, int64_t keys, int64_t padded, int64_t d, int64_t heads, int causal,
                               float scale, const dropout_place *dropout) {
  shape s = {queries, keys, padded, d, causal, scale, 0, 0, 0, 0, {0, 1.0f, 0}, 0, heads};
  if (dropout) s.dropout = *dropout;
  return s;
}

/* s for the pair (b, h): its mask's rows and its first element for the dropout's draws. */
static inline shape for_pair(shape s, const mask_place *mask, int64_t b, int64_t h) {
  s.base = (b * s.heads + h) * s.queries * s.keys;
  if (!mask) return s;
  const char *base = (const char *)mask->p + (b * mask->b + h * mask->h) * (mask->kind == 1 ? 1 : 4);
  if (mask->kind == 1) s.allowed = (const uint8_t *)base;
  else s.bias = (const float *)base;
  s.mq = mask->q, s.mk = mask->k;
  return s;
}

/* Keys query i attends: all, or with the causal mask those up to i (torch's, aligned at the top left). */
static inline int64_t attended(const shape *s, int64_t i) {
  return s->causal && i + 1 < s->keys ? i + 1 : s->keys;
}

/* Row i's first n scores scaled, with the mask's bias added or -inf where it does not attend. */
static inline void scaled_row(float *row, int64_t i, int64_t n, const shape *s) {
  for (int64_t j = 0; j < n; j++) row[j] *= s->scale;
  if (s->bias)
    for (int64_t j = 0; j < n; j++) row[j] += s->bias[i * s->mq + j * s->mk];
  if (s->allowed)
    for (int64_t j = 0; j < n; j++) row[j] = s->allowed[i * s->mq + j * s->mk] ? row[j] : -INFINITY;
}

/* Each row of scores made softmax(scale · scores + mask) in place, its log-sum-exp in lse; the keys it
   does not attend, and the padding, 0. A row that attends no key gets zeros (as torch's attention gives)
   and a log-sum-exp of -inf. */
static inline void softmax_rows(float *scores, float *lse, const shape *s) {
  for (int64_t i = 0; i < s->queries; i++) {
    float *row = scores + i * s->padded;
    int64_t n = attended(s, i);
    scaled_row(row, i, n, s);
    float top = largest(row, n);
    if (top == -INFINITY) n = 0;
    exp_shifted(row, row, n, top);
    float sum = sum_of(row, n), inverse = 1.0f / sum;
    for (int64_t j = 0; j < n; j++) row[j] *= inverse;
    for (int64_t j = n; j < s->padded; j++) row[j] = 0;
    lse[i] = n ? top + logf(sum) : -INFINITY;
  }
}

/* The softmax again from the scores and the forward pass's log-sum-exp. */
static inline void probabilities(float *scores, const float *lse, const shape *s) {
  for (int64_t i = 0; i < s->queries; i++) {
    float *row = scores + i * s->padded;
    int64_t n = lse[i] == -INFINITY ? 0 : attended(s, i);
    scaled_row(row, i, n, s);
    exp_shifted(row, row, n, lse[i]);
    for (int64_t j = n; j < s->padded; j++) row[j] = 0;
  }
}

/* x (queries × padded: probabilities, or their gradient) times the dropout's keep decisions and scale, over
   the keys each query attends (the rest is 0 already); nothing without dropout. */
static inline void dropped_rows(float *x, const shape *s) {
  const dropout_place drop = s->dropout;
  if (!drop.dropped) return;
  for (int64_t i = 0; i < s->queries; i++) {
    float *row = x + i * s->padded;
    uint64_t first = (uint64_t)(s->base + i * s->keys);
    int64_t n = attended(s, i);
    for (int64_t j = 0; j < n; j++)
      row[j] *= draw(first + (uint64_t)j, drop.seed) >= drop.dropped ? drop.kept_scale : 0.0f;
  }
}

/* ds (queries × padded) = P ∘ (ds − rows) · scale in place: the scores' gradient from the probabilities'
   (dO · Vᵀ, in ds) and rows[i] = Σ dO_i ∘ O_i, times the scale the scores were taken at; 0 where a query
   attends no key and in the padding. */
static inline void scores_gradient(float *ds, const float *p, const float *rows, const shape *s) {
  for (int64_t i = 0; i < s->queries; i++) {
    float *g = ds + i * s->padded;
    const float *w = p + i * s->padded;
    int64_t n = attended(s, i);
    for (int64_t j = 0; j < n; j++) g[j] = w[j] * (g[j] - rows[i]) * s->scale;
    for (int64_t j = n; j < s->padded; j++) g[j] = 0;
  }
}

/* A (B, H, T, d) operand: element (b, h, t, i) at p[b · b + h · h + t · t + i]. */
typedef struct {
  float *p;
  int64_t b, h, t;
} place;

static inline float *at(const place *x, int64_t b, int64_t h) { return x->p + b * x->b + h * x->h; }

/* One thread's buffers, `floats` floats in all; 0 if there is no memory for them. */
static inline float *buffers(int64_t floats) { return malloc((size_t)floats * sizeof(float)); }

#endif
