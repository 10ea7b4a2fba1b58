/* A feed-forward's activation and its backward pass over (rows × n) values, in fp32 or bf16, for
   kernels/activation.py: elementwise.h's forms (one exponential, no libm call, each loop
   vectorized) on all threads. torch's GELU (tanh) took 4 ms forward and 4.5 backward for 4,096 rows
   of 1,536 in fp32 (the benchmark's GPT layer, AMD EPYC Zen 5, 2 threads), a third of the time the
   step's products of that layer took. GELU (erf) at BERT's 4,096 x 1,536, forward / backward: fp32
   1.5 / 1.8 ms against torch's 1.8 / 2.9; bf16 1.75 / 1.9 against 0.94 / 1.9, where calibration keeps
   torch's (`python benchmarks/elementwise.py`, same machine). With Numerical Recipes' erfc and a
   second exponential for the slope, the fp32 forward took 2.2 ms and the bf16 one 2.5. */

#include <math.h>
#include <stdint.h>

#include "elementwise.h"

/* d activation / dv at v, as torch's backward passes compute it:
   GELU (tanh): with s = σ(2u), u = √(2/π) (v + 0.044715 v³): s + 2 v s (1 - s) √(2/π) (1 + 3 · 0.044715 v²);
   GELU (erf): Φ(v) + v φ(v), one exponential for both; SiLU: σ(v) (1 + v (1 - σ(v))); ReLU: 1 for v > 0. */
static inline float slope(int act, float v) {
  switch (act) {
    case ACT_RELU: return v > 0 ? 1.0f : 0.0f;
    case ACT_GELU: {
      float e = exp_inline(-0.5f * v * v);
      return 0.5f * twice_phi(v, e) + v * 0.3989422804014327f * e;
    }
    case ACT_GELU_TANH: {
      float s = 1.0f / (1.0f + exp_inline(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
      return s + 2.0f * v * s * (1.0f - s) * 0.7978845608028654f * (1.0f + 0.134145f * v * v);
    }
    case ACT_SILU: {
      float s = 1.0f / (1.0f + exp_inline(-v));
      return s * (1.0f + v * (1.0f - s));
    }
    default: return 1.0f;
  }
}

/* The loop over one row for the kind of ACT, one loop per kind so that each is vectorized with its kind
   fixed; BODY(KIND, SCALAR, NARROW) is the loop. */
#define FOR_EACH_KIND(ACT, BODY, SCALAR, NARROW)                                                           \
  switch (ACT) {                                                                                           \
    case ACT_RELU: BODY(ACT_RELU, SCALAR, NARROW); break;                                                  \
    case ACT_GELU: BODY(ACT_GELU, SCALAR, NARROW); break;                                                  \
    case ACT_GELU_TANH: BODY(ACT_GELU_TANH, SCALAR, NARROW); break;                                        \
    case ACT_SILU: BODY(ACT_SILU, SCALAR, NARROW); break;                                                  \
    default: break;                                                                                        \
  }
#define FORWARD_ROW(KIND, SCALAR, NARROW) \
  for (int64_t i = 0; i < n; i++) out[i] = NARROW(activate(KIND, SCALAR(in[i])))
#define BACKWARD_ROW(KIND, SCALAR, NARROW) \
  for (int64_t i = 0; i < n; i++) out[i] = NARROW(SCALAR(grad[i]) * slope(KIND, SCALAR(in[i])))

/* The kernels for values of type T (SCALAR: one as fp32; NARROW: an fp32 result as T). x (rows × n) at
   row stride ldx, the rest contiguous (rows × n). forward: y = act(x); backward: dx = g · act'(x). */
#define ACTIVATION(NAME, T, SCALAR, NARROW)                                                                \
  void triform_activation_forward_##NAME(int act, const T *x, int64_t ldx, T *y, int64_t rows, int64_t n,  \
                                         int threads) {                                                    \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows > 1)")         \
    for (int64_t r = 0; r < rows; r++) {                                                                   \
      const T *in = x + r * ldx;                                                                           \
      T *out = y + r * n;                                                                                  \
      FOR_EACH_KIND(act, FORWARD_ROW, SCALAR, NARROW)                                                      \
    }                                                                                                      \
  }                                                                                                        \
  void triform_activation_backward_##NAME(int act, const T *x, int64_t ldx, const T *g, T *dx, int64_t rows, \
                                          int64_t n, int threads) {                                        \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows > 1)")         \
    for (int64_t r = 0; r < rows; r++) {                                                                   \
      const T *in = x + r * ldx, *grad = g + r * n;                                                        \
      T *out = dx + r * n;                                                                                 \
      FOR_EACH_KIND(act, BACKWARD_ROW, SCALAR, NARROW)                                                     \
    }                                                                                                      \
  }

ACTIVATION(f32, float, same, same)
ACTIVATION(bf16, uint16_t, widen, narrow)
