/* A matrix written out transposed, for a product whose library kernel wants its operand in the other
   layout (kernels/linear.py): oneDNN's inner product copies a transposed input to its rows itself,
   with torch's strided copy, which took 0.7 ms for 4,096 × 384 fp32 values (AMD EPYC Zen 5, 2 threads)
   where reading and writing them takes 0.3.

   By tiles of 16 × 16, so that each tile's 16 source rows are read while in the first-level cache and
   its 16 destination rows written whole lines at a time; the tiles shared among the threads. */

#include <stdint.h>

enum { TILE = 16 };

/* to (columns × rows, row stride ldt) = from (rows × columns, row stride ldf) transposed, for elements
   of type T. */
#define TRANSPOSE(NAME, T)                                                                                 \
  void triform_transpose_##NAME(const T *from, int64_t ldf, T *to, int64_t ldt, int64_t rows, int64_t columns, \
                                int threads) {                                                             \
    int64_t across = (rows + TILE - 1) / TILE, down = (columns + TILE - 1) / TILE;                         \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && across * down > 1)") \
    for (int64_t tile = 0; tile < across * down; tile++) {                                                 \
      int64_t r0 = tile % across * TILE, c0 = tile / across * TILE;                                        \
      int64_t r1 = r0 + TILE < rows ? r0 + TILE : rows, c1 = c0 + TILE < columns ? c0 + TILE : columns;    \
      for (int64_t c = c0; c < c1; c++)                                                                    \
        for (int64_t r = r0; r < r1; r++) to[c * ldt + r] = from[r * ldf + c];                             \
    }                                                                                                      \
  }

TRANSPOSE(32, uint32_t)
TRANSPOSE(16, uint16_t)
