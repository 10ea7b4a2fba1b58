/* A matrix written out transposed, for a product whose library kernel wants its operand in the other
   layout (kernels/linear.py): oneDNN's inner product copies a transposed input to its rows itself,
   with torch's strided copy, which took 0.7 ms for 4,096 × 384 fp32 values (AMD EPYC Zen 5, 2 threads)
   where reading and writing them takes 0.3.

   By tiles of 16 × 16, so that each tile's 16 source rows are read while in the first-level cache and
   its 16 destination rows written whole at a time; the tiles shared among the threads. A whole tile is
   transposed in registers: with AVX512 in one step (16-bit values widened to 32 bits for it), with AVX
   in four of 8 × 8 (32-bit values). The compiler's code for the element by element loop, which the
   partial tiles at the edges still take, was 1.6 to 3 times slower on a training step's shapes (25
   transposes were 30 ms of a 1.0 s fp32 step of benchmarks/run.py's GPT); now torch's strided copy
   of the same views takes 2.7 to 4.8 times as long as this (`python benchmarks/elementwise.py`, AMD
   EPYC Zen 5, 2 threads). */

#include <stdint.h>

#ifdef __AVX__
#include <immintrin.h>
#endif

enum { TILE = 16 };

#ifdef __AVX512F__
/* Rows r[0..16) of 16 32-bit lanes, transposed in place: by 32-bit and 64-bit interleaves within each
   128-bit quarter, which leaves r[4b + k]'s quarter q holding rows 4b..4b+3 at column 4q + k, then two
   rounds of moving whole quarters. */
static inline void transpose16(__m512i r[TILE]) {
  __m512i t[TILE];
  for (int i = 0; i < TILE; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < TILE; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int k = 0; k < 4; k++) {
    __m512i low = _mm512_shuffle_i32x4(r[k], r[4 + k], 0x44), high = _mm512_shuffle_i32x4(r[k], r[4 + k], 0xee);
    __m512i low2 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0x44);
    __m512i high2 = _mm512_shuffle_i32x4(r[8 + k], r[12 + k], 0xee);
    t[k] = _mm512_shuffle_i32x4(low, low2, 0x88);
    t[4 + k] = _mm512_shuffle_i32x4(low, low2, 0xdd);
    t[8 + k] = _mm512_shuffle_i32x4(high, high2, 0x88);
    t[12 + k] = _mm512_shuffle_i32x4(high, high2, 0xdd);
  }
  for (int i = 0; i < TILE; i++) r[i] = t[i];
}

static inline void tile_32(const uint32_t *from, int64_t ldf, uint32_t *to, int64_t ldt) {
  __m512i r[TILE];
  for (int i = 0; i < TILE; i++) r[i] = _mm512_loadu_si512(from + i * ldf);
  transpose16(r);
  for (int i = 0; i < TILE; i++) _mm512_storeu_si512(to + i * ldt, r[i]);
}

static inline void tile_16(const uint16_t *from, int64_t ldf, uint16_t *to, int64_t ldt) {
  __m512i r[TILE];
  for (int i = 0; i < TILE; i++) r[i] = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(from + i * ldf)));
  transpose16(r);
  for (int i = 0; i < TILE; i++) _mm256_storeu_si256((__m256i *)(to + i * ldt), _mm512_cvtepi32_epi16(r[i]));
}
enum { WHOLE_32 = 1, WHOLE_16 = 1 };
#elif defined(__AVX__)
/* 8 × 8 32-bit values in place, twice over for a tile: interleaves within each 128-bit half, then
   the halves exchanged. */
static inline void transpose8(const uint32_t *from, int64_t ldf, uint32_t *to, int64_t ldt) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps((const float *)(from + i * ldf));
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44), r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44), r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int k = 0; k < 4; k++) {
    _mm256_storeu_ps((float *)(to + k * ldt), _mm256_permute2f128_ps(r[k], r[4 + k], 0x20));
    _mm256_storeu_ps((float *)(to + (4 + k) * ldt), _mm256_permute2f128_ps(r[k], r[4 + k], 0x31));
  }
}

static inline void tile_32(const uint32_t *from, int64_t ldf, uint32_t *to, int64_t ldt) {
  for (int i = 0; i < TILE; i += 8)
    for (int j = 0; j < TILE; j += 8) transpose8(from + i * ldf + j, ldf, to + j * ldt + i, ldt);
}
#endif

#ifndef __AVX512F__ /* 16-bit tiles element by element; without AVX 32-bit ones too */
static inline void tile_16(const uint16_t *from, int64_t ldf, uint16_t *to, int64_t ldt) {
  (void)from, (void)ldf, (void)to, (void)ldt;
}
#ifdef __AVX__
enum { WHOLE_32 = 1, WHOLE_16 = 0 };
#else
enum { WHOLE_32 = 0, WHOLE_16 = 0 };
static inline void tile_32(const uint32_t *from, int64_t ldf, uint32_t *to, int64_t ldt) {
  (void)from, (void)ldf, (void)to, (void)ldt;
}
#endif
#endif

/* to (columns × rows, row stride ldt) = from (rows × columns, row stride ldf) transposed, for elements
   of BITS bits: whole tiles in registers where tile_BITS can, the rest element by element. */
#define TRANSPOSE(BITS, T)                                                                                     \
  void triform_transpose_##BITS(const T *from, int64_t ldf, T *to, int64_t ldt, int64_t rows, int64_t columns, \
                                int threads) {                                                                 \
    int64_t across = (rows + TILE - 1) / TILE, down = (columns + TILE - 1) / TILE;                             \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && across * down > 1)")    \
    for (int64_t tile = 0; tile < across * down; tile++) {                                                     \
      int64_t r0 = tile % across * TILE, c0 = tile / across * TILE;                                            \
      int64_t r1 = r0 + TILE < rows ? r0 + TILE : rows, c1 = c0 + TILE < columns ? c0 + TILE : columns;        \
      if (WHOLE_##BITS && r1 - r0 == TILE && c1 - c0 == TILE) {                                                \
        tile_##BITS(from + r0 * ldf + c0, ldf, to + c0 * ldt + r0, ldt);                                       \
        continue;                                                                                              \
      }                                                                                                        \
      for (int64_t c = c0; c < c1; c++)                                                                        \
        for (int64_t r = r0; r < r1; r++) to[c * ldt + r] = from[r * ldf + c];                                 \
    }                                                                                                          \
  }

TRANSPOSE(32, uint32_t)
TRANSPOSE(16, uint16_t)
