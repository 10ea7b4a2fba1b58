/* A feed-forward's activation and its backward pass over (rows × n) values, in fp32 or bf16, for
   kernels/activation.py: elementwise.h's forms (one exponential, no libm call) on all threads, 16
   values a step with AVX512, by vectorized loops elsewhere. torch's GELU (tanh) took 4 ms forward and
   4.3 backward for 4,096 rows of 1,536 in fp32 (the benchmark's GPT layer, AMD EPYC Zen 5, 2 threads),
   this 1.0 / 1.45; GELU (erf) at BERT's shape, forward / backward, fp32 1.1 / 1.3 ms against torch's
   1.6 / 2.8, bf16 1.1 / 1.2 against 0.9 / 1.7 (`python benchmarks/elementwise.py`, same machine). */

#include <math.h>
#include <stdint.h>

#include "elementwise.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
/* With AVX512, 16 values a step by the same forms, written out: GCC's vectorized loops (below, the
   other CPUs' build) build 2ⁿ from its bits with the clamps and tail cases that needs, and divide,
   where vscalefps scales by 2ⁿ itself and a reciprocal is vrcp14ps with one Newton step (within an
   ulp or so); bf16 is widened in the registers and rounded by vcvtneps2bf16 where the CPU has it.
   Against those loops, at 4,096 x 1,536 with fresh output memory as in training (AMD EPYC Zen 5,
   2 threads, alternating calls): bf16 forward 1.5-1.6 times as fast (GELU (erf) 1.70 -> 1.06 ms),
   backward 1.3-1.5 times (1.79 -> 1.23); fp32 forward 1.2-1.4 times, backward the same (memory's
   speed). */
#define AVX512_ACTIVATIONS 1

static inline __m512 splat(float f) { return _mm512_set1_ps(f); }

/* 1 / d for finite d ≥ 1, as this file's forms need it. */
static inline __m512 reciprocal16(__m512 d) {
  __m512 r = _mm512_rcp14_ps(d);
  return _mm512_fmadd_ps(_mm512_fnmadd_ps(d, r, splat(1.0f)), r, r);
}

/* twice_phi (elementwise.h) for 16 values; |v| capped so that t stays finite and positive. */
static inline __m512 twice_phi16(__m512 v, __m512 e) {
  __m512 a = _mm512_min_ps(splat(1e18f), _mm512_abs_ps(v));
  __m512 t = reciprocal16(_mm512_fmadd_ps(splat(0.3275911f * 0.70710678118654752f), a, splat(1.0f)));
  __m512 p = splat(1.061405429f);
  p = _mm512_fmadd_ps(p, t, splat(-1.453152027f)), p = _mm512_fmadd_ps(p, t, splat(1.421413741f));
  p = _mm512_fmadd_ps(p, t, splat(-0.284496736f)), p = _mm512_fmadd_ps(p, t, splat(0.254829592f));
  __m512 c = _mm512_mul_ps(_mm512_mul_ps(t, p), e);
  __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_blend_ps(negative, _mm512_sub_ps(splat(2.0f), c), c);
}

/* -v²/2, the exponent of GELU (erf)'s e */
static inline __m512 half_square16(__m512 v) { return _mm512_mul_ps(_mm512_mul_ps(v, v), splat(-0.5f)); }

/* The logistic's argument for GELU (tanh): -2u = -√(8/π) (v + 0.044715 v³) */
static inline __m512 tanh_argument16(__m512 v) {
  __m512 cube = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
  return _mm512_mul_ps(_mm512_fmadd_ps(cube, splat(0.044715f), v), splat(-1.5957691216057308f));
}

static inline __m512 activate16(int act, __m512 v) {
  switch (act) {
    case ACT_RELU: return _mm512_max_ps(_mm512_setzero_ps(), v); /* a NaN stays NaN */
    case ACT_GELU: return _mm512_mul_ps(_mm512_mul_ps(splat(0.5f), v), twice_phi16(v, exp16(half_square16(v))));
    case ACT_GELU_TANH: return _mm512_mul_ps(v, reciprocal16(_mm512_add_ps(splat(1.0f), exp16(tanh_argument16(v)))));
    case ACT_SILU:
      return _mm512_mul_ps(v, reciprocal16(_mm512_add_ps(splat(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), v)))));
    default: return v;
  }
}

/* d activation / dv at v for 16 values, as `slope` (the other build's, below) */
static inline __m512 slope16(int act, __m512 v) {
  __m512 one = splat(1.0f);
  switch (act) {
    case ACT_RELU: {
      __mmask16 positive = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ);
      return _mm512_maskz_mov_ps(positive, one);
    }
    case ACT_GELU: {
      __m512 e = exp16(half_square16(v));
      __m512 density = _mm512_mul_ps(_mm512_mul_ps(v, splat(0.3989422804014327f)), e);
      return _mm512_fmadd_ps(splat(0.5f), twice_phi16(v, e), density);
    }
    case ACT_GELU_TANH: {
      __m512 s = reciprocal16(_mm512_add_ps(one, exp16(tanh_argument16(v))));
      __m512 inner = _mm512_fmadd_ps(_mm512_mul_ps(v, v), splat(0.134145f), one);
      __m512 spread = _mm512_mul_ps(_mm512_mul_ps(s, _mm512_sub_ps(one, s)), splat(2.0f * 0.7978845608028654f));
      return _mm512_fmadd_ps(_mm512_mul_ps(v, spread), inner, s);
    }
    case ACT_SILU: {
      __m512 s = reciprocal16(_mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), v))));
      return _mm512_mul_ps(s, _mm512_fmadd_ps(v, _mm512_sub_ps(one, s), one));
    }
    default: return one;
  }
}

/* 16 (or `mask`'s) values at p as fp32, and back: bf16 widened by a shift, rounded as narrow() rounds
   (to nearest, ties to even; a NaN quieted). */
static inline __m512 load16_f32(const float *p, __mmask16 mask) {
  return mask == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask, p);
}
static inline void store16_f32(float *p, __m512 v, __mmask16 mask) {
  if (mask == 0xffff) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, mask, v);
}
static inline __m512 load16_bf16(const uint16_t *p, __mmask16 mask) {
  __m256i h = mask == 0xffff ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline void store16_bf16(uint16_t *p, __m512 v, __mmask16 mask) {
#ifdef __AVX512BF16__ /* one instruction, which flushes a subnormal result (under 1.2e-38) to zero */
  __m256i narrowed = (__m256i)_mm512_cvtneps_pbh(v);
#else
  __m512i bits = _mm512_castps_si512(v);
  __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
  __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  __m256i narrowed = _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
#endif
  if (mask == 0xffff) _mm256_storeu_si256((__m256i *)p, narrowed);
  else _mm256_mask_storeu_epi16(p, mask, narrowed);
}

/* The first `count` of 16 lanes. All but a row's last few lanes are read and written by plain loads and
   stores: masked ones, to memory not in the cache, ran at half the speed (AMD EPYC Zen 5). */
static inline __mmask16 first(int64_t count) { return count >= 16 ? 0xffff : (__mmask16)((1u << count) - 1); }

/* One row, the kind a constant where the switch below calls them (always inlined, so that each case's
   loop is compiled for its kind alone). */
#define ROWS16(T, E)                                                                                          \
  static inline __attribute__((always_inline)) void forward16_##T(int act, const E *in, E *out, int64_t n) {  \
    int64_t i = 0;                                                                                            \
    for (; i + 16 <= n; i += 16) store16_##T(out + i, activate16(act, load16_##T(in + i, 0xffff)), 0xffff);   \
    if (i < n) store16_##T(out + i, activate16(act, load16_##T(in + i, first(n - i))), first(n - i));          \
  }                                                                                                           \
  static inline __attribute__((always_inline)) void backward16_##T(int act, const E *in, const E *grad,       \
                                                                   E *out, int64_t n) {                       \
    int64_t i = 0;                                                                                            \
    for (; i + 16 <= n; i += 16) {                                                                            \
      __m512 product = _mm512_mul_ps(load16_##T(grad + i, 0xffff), slope16(act, load16_##T(in + i, 0xffff))); \
      store16_##T(out + i, product, 0xffff);                                                                  \
    }                                                                                                         \
    if (i < n) {                                                                                              \
      __mmask16 m = first(n - i);                                                                             \
      store16_##T(out + i, _mm512_mul_ps(load16_##T(grad + i, m), slope16(act, load16_##T(in + i, m))), m);   \
    }                                                                                                         \
  }
ROWS16(f32, float)
ROWS16(bf16, uint16_t)

#define EACH_KIND16(ACT, CALL)                                                                       \
  switch (ACT) {                                                                                     \
    case ACT_RELU: CALL(ACT_RELU); break;                                                            \
    case ACT_GELU: CALL(ACT_GELU); break;                                                            \
    case ACT_GELU_TANH: CALL(ACT_GELU_TANH); break;                                                  \
    case ACT_SILU: CALL(ACT_SILU); break;                                                            \
    default: break;                                                                                  \
  }
#define FORWARD_ROWS(NAME, SCALAR, NARROW) EACH_KIND16(act, FORWARD_##NAME)
#define BACKWARD_ROWS(NAME, SCALAR, NARROW) EACH_KIND16(act, BACKWARD_##NAME)
#define FORWARD_f32(KIND) forward16_f32(KIND, in, out, n)
#define FORWARD_bf16(KIND) forward16_bf16(KIND, in, out, n)
#define BACKWARD_f32(KIND) backward16_f32(KIND, in, grad, out, n)
#define BACKWARD_bf16(KIND) backward16_bf16(KIND, in, grad, out, n)

#else
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

#define FORWARD_ROWS(NAME, SCALAR, NARROW) FOR_EACH_KIND(act, FORWARD_ROW, SCALAR, NARROW)
#define BACKWARD_ROWS(NAME, SCALAR, NARROW) FOR_EACH_KIND(act, BACKWARD_ROW, SCALAR, NARROW)
#endif

/* The kernels for values of type T (SCALAR: one as fp32; NARROW: an fp32 result as T). x (rows × n) at
   row stride ldx, the rest contiguous (rows × n). forward: y = act(x); backward: dx = g · act'(x). Each
   row by this build's FORWARD_ROWS and BACKWARD_ROWS (above). */
#define ACTIVATION(NAME, T, SCALAR, NARROW)                                                                \
  void triform_activation_forward_##NAME(int act, const T *x, int64_t ldx, T *y, int64_t rows, int64_t n,  \
                                         int threads) {                                                    \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows > 1)")         \
    for (int64_t r = 0; r < rows; r++) {                                                                   \
      const T *in = x + r * ldx;                                                                           \
      T *out = y + r * n;                                                                                  \
      FORWARD_ROWS(NAME, SCALAR, NARROW)                                                                   \
    }                                                                                                      \
  }                                                                                                        \
  void triform_activation_backward_##NAME(int act, const T *x, int64_t ldx, const T *g, T *dx, int64_t rows, \
                                          int64_t n, int threads) {                                        \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows > 1)")         \
    for (int64_t r = 0; r < rows; r++) {                                                                   \
      const T *in = x + r * ldx, *grad = g + r * n;                                                        \
      T *out = dx + r * n;                                                                                 \
      BACKWARD_ROWS(NAME, SCALAR, NARROW)                                                                  \
    }                                                                                                      \
  }

ACTIVATION(f32, float, same, same)
ACTIVATION(bf16, uint16_t, widen, narrow)
