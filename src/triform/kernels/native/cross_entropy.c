/* Cross-entropy over a vocabulary and its gradient in one pass over the logits, for kernels/loss.py.

   Each row is read from memory once: its largest logit and (for label smoothing) its sum, then
   e^(x - max) into a row of scratch in the caches, their sum, the row's loss and its gradient
   (softmax - the target distribution, times the row's weight) written in the logits' dtype. torch's
   log-softmax, exponential and scatter over blocks of rows took some 50 ms a step of the benchmark's
   GPT (4,096 rows of 8,192 logits in fp32, AMD EPYC Zen 5, 2 threads), several passes over each
   block with an exponential per logit in each of two of them. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "elementwise.h"

/* The kernel for logits and gradient of type T (WIDEN: a row to fp32 in `row`; NARROW: one value to
   T). weights[r]: 1 / the number of counted rows, or 0 for a row not counted (its gradient zeros);
   targets[r] in [0, vocab) where weights[r] is not 0. *loss = Σ_r weights[r] · loss_r, summed in
   double. gradient NULL: the loss alone; it may be the logits themselves (each row is read before it is
   written). -1: no memory. */
#define CROSS_ENTROPY(NAME, T, WIDEN, NARROW)                                                              \
  int triform_cross_entropy_##NAME(const T *logits, int64_t ld, const int64_t *targets, const float *weights, \
                                   float smoothing, T *gradient, int64_t ldg, int64_t rows, int64_t vocab,   \
                                   double *loss, int threads) {                                            \
    double total = 0;                                                                                      \
    int failed = 0;                                                                                        \
    _Pragma("omp parallel num_threads(threads) if (threads > 1 && rows > 1) reduction(+ : total)") {       \
      float *scratch = malloc((size_t)(2 * vocab) * sizeof(float));                                        \
      if (!scratch) failed = 1;                                                                            \
      _Pragma("omp for schedule(static)") for (int64_t r = 0; r < rows; r++) {                             \
        if (!scratch) continue;                                                                            \
        float w = weights[r];                                                                              \
        T *g = gradient ? gradient + r * ldg : 0;                                                          \
        if (w == 0) {                                                                                      \
          if (g)                                                                                           \
            for (int64_t j = 0; j < vocab; j++) g[j] = NARROW(0.0f);                                       \
          continue;                                                                                        \
        }                                                                                                  \
        const float *x = WIDEN(logits + r * ld, scratch + vocab, vocab);                                   \
        float *e = scratch, top = largest(x, vocab);                                                       \
        exp_shifted(x, e, vocab, top);                                                                     \
        float sum = sum_of(e, vocab), log_sum = logf(sum), inverse = 1.0f / sum;                           \
        int64_t t = targets[r];                                                                            \
        double row_loss = -(1.0 - smoothing) * (x[t] - top - log_sum);                                     \
        if (smoothing != 0) row_loss -= smoothing * ((double)sum_of(x, vocab) / vocab - top - log_sum);    \
        total += w * row_loss;                                                                             \
        if (!g) continue;                                                                                  \
        float spread = smoothing / (float)vocab;                                                           \
        for (int64_t j = 0; j < vocab; j++) g[j] = NARROW((e[j] * inverse - spread) * w);                  \
        g[t] = NARROW(((e[t] * inverse - spread) - (1.0f - smoothing)) * w);                               \
      }                                                                                                    \
      free(scratch);                                                                                       \
    }                                                                                                      \
    *loss = total;                                                                                         \
    return failed ? -1 : 0;                                                                                \
  }

/* fp32 logits are read where they are; bf16 ones widened into the scratch row. */
static inline const float *as_is(const float *row, float *unused, int64_t n) {
  (void)unused, (void)n;
  return row;
}

static inline const float *widened(const uint16_t *row, float *to, int64_t n) {
  for (int64_t j = 0; j < n; j++) to[j] = widen(row[j]);
  return to;
}

CROSS_ENTROPY(f32, float, as_is, same)
CROSS_ENTROPY(bf16, uint16_t, widened, narrow)
