/* What the native kernels share: an 8-lane fp32 vector (GCC's and Clang's vector extension, lowered to
   the CPU's SIMD instructions by -march=native), loads of fp32 and bf16 lanes, bf16's conversions, and
   the walk over a few rows in groups of four. */

#ifndef TRIFORM_SIMD_H
#define TRIFORM_SIMD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX__
#include <immintrin.h>
#endif

typedef float vec __attribute__((vector_size(32)));
typedef uint16_t half_lanes __attribute__((vector_size(16)));
typedef uint32_t wide_lanes __attribute__((vector_size(32)));
enum { LANES = 8 };

static inline vec load_f32(const float *p) {
  vec v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* bf16 is the upper half of an fp32: widening is a shift. With AVX2 a load widened to 32 bits in one
   instruction; GCC 12 lowered the generic conversion to two half-width ones and a merge, which left
   bf16 attention slower than fp32's over twice the bytes. */
static inline vec load_bf16(const uint16_t *p) {
#ifdef __AVX2__
  return (vec)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
#else
  half_lanes h;
  memcpy(&h, p, sizeof h);
  return (vec)(__builtin_convertvector(h, wide_lanes) << 16);
#endif
}

static inline float widen(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* fp32 -> bf16 rounded to nearest, ties to even, as torch rounds; NaN stays NaN. */
static inline uint16_t narrow(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)(bits >> 16);
}

static inline float same(float f) { return f; }
static inline uint16_t same_bits(uint16_t h) { return h; }

static inline float total(vec v) {
  float s = 0;
  for (int i = 0; i < LANES; i++) s += v[i];
  return s;
}

/* The totals of a, b, c, d into out[0..3]: with AVX three horizontal adds and one add for all four. */
static inline void totals4(vec a, vec b, vec c, vec d, float *out) {
#ifdef __AVX__
  __m256 t = _mm256_hadd_ps(_mm256_hadd_ps((__m256)a, (__m256)b), _mm256_hadd_ps((__m256)c, (__m256)d));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
#else
  out[0] = total(a), out[1] = total(b), out[2] = total(c), out[3] = total(d);
#endif
}

/* Rows 0 to M in groups of at most four: DOTS(r) for the group at row m, with r its number of rows as
   a constant (so that each inlined copy keeps its sums in registers), then FINISH with m and R set. */
#define IN_GROUPS_OF_FOUR(M, DOTS, FINISH)        \
  for (int64_t m = 0; m < (M); m += 4) {          \
    int R = (M) - m >= 4 ? 4 : (int)((M) - m);    \
    switch (R) {                                  \
      case 4: DOTS(4); break;                     \
      case 3: DOTS(3); break;                     \
      case 2: DOTS(2); break;                     \
      default: DOTS(1);                           \
    }                                             \
    FINISH                                        \
  }

/* The widest fp32 vector the CPU has, for the kernels that run at the arithmetic's speed rather than
   memory's: 16 lanes with AVX512, 8 elsewhere (a 16-lane vector without AVX512 ran the training
   attention 30 times slower, in pieces); and sums and maxima over a row in them: GCC vectorizes
   neither reduction of floats without -ffast-math, which would reorder every other sum too. */
#ifdef __AVX512F__
enum { WIDE = 16 };
#else
enum { WIDE = 8 };
#endif
typedef float wide __attribute__((vector_size(4 * WIDE)));
typedef int32_t wide_mask __attribute__((vector_size(4 * WIDE)));

static inline wide load_wide(const float *p) {
  wide v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline void store_wide(float *p, wide v) { memcpy(p, &v, sizeof v); }

/* The largest of x[0 .. n) (-inf for none; a NaN is passed over). */
static inline float largest(const float *x, int64_t n) {
  wide top = (wide){0} - __builtin_inff();
  int64_t i = 0;
  for (; i + WIDE <= n; i += WIDE) {
    wide v = load_wide(x + i);
    wide_mask above = v > top;
    top = (wide)((above & (wide_mask)v) | (~above & (wide_mask)top));
  }
  float m = -__builtin_inff();
  for (int j = 0; j < WIDE; j++) m = top[j] > m ? top[j] : m;
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

/* x[0] + ... + x[n - 1], in four sums of WIDE lanes. */
static inline float sum_of(const float *x, int64_t n) {
  wide a = {0}, b = {0}, c = {0}, d = {0};
  int64_t i = 0;
  for (; i + 4 * WIDE <= n; i += 4 * WIDE) {
    a += load_wide(x + i), b += load_wide(x + i + WIDE);
    c += load_wide(x + i + 2 * WIDE), d += load_wide(x + i + 3 * WIDE);
  }
  for (; i + WIDE <= n; i += WIDE) a += load_wide(x + i);
  a += b + c + d;
  float s = 0;
  for (int j = 0; j < WIDE; j++) s += a[j];
  for (; i < n; i++) s += x[i];
  return s;
}

#endif
