/* Dropout in one pass, for kernels/dropout.py: each element's keep decision from a hash of its index
   and the call's seed (drawn from torch's generator, so that torch.manual_seed makes a run repeat),
   the result and a byte of keep mask written at once; the backward pass the gradient times that mask.

   The decision is 15 bits of the hash against p · 2¹⁵, as the torch path's is against 15 random bits of
   its draws. The hash is murmur3's 32-bit finalizer, twice, over the index mixed with the seed's two
   halves: counter-based, so any thread may take any element, and vectorized. torch's generator (a
   Mersenne twister, one draw after another) drew the bits for the benchmark GPT's dropouts in 14 ms a
   step (AMD EPYC Zen 5), a third of the time the dropouts took. */

#include <stdint.h>

#include "dropout.h"
#include "simd.h"

enum { CHUNK = 1 << 14 }; /* elements a thread takes at a time */

/* y = x · keep · scale and keep (1: kept) for n elements of type T (SCALAR: as fp32; NARROW: back),
   keep where the 15-bit draw ≥ dropped; backward: dx = g · keep · scale. */
#define DROPOUT(NAME, T, SCALAR, NARROW)                                                                   \
  void triform_dropout_##NAME(const T *x, T *y, uint8_t *keep, int64_t n, uint32_t dropped, float scale,   \
                              uint64_t seed, int threads) {                                                \
    int64_t chunks = (n + CHUNK - 1) / CHUNK;                                                              \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && chunks > 1)")       \
    for (int64_t c = 0; c < chunks; c++) {                                                                 \
      int64_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;                                             \
      for (int64_t i = c * CHUNK; i < end; i++) {                                                          \
        uint8_t kept = draw((uint64_t)i, seed) >= dropped;                                                 \
        keep[i] = kept;                                                                                    \
        y[i] = NARROW(SCALAR(x[i]) * (kept ? scale : 0.0f)); /* x · 0 as torch's: a NaN stays */           \
      }                                                                                                    \
    }                                                                                                      \
  }                                                                                                        \
  void triform_dropout_backward_##NAME(const T *g, const uint8_t *keep, T *dx, int64_t n, float scale,      \
                                       int threads) {                                                      \
    int64_t chunks = (n + CHUNK - 1) / CHUNK;                                                              \
    _Pragma("omp parallel for schedule(static) num_threads(threads) if (threads > 1 && chunks > 1)")       \
    for (int64_t c = 0; c < chunks; c++) {                                                                 \
      int64_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;                                             \
      for (int64_t i = c * CHUNK; i < end; i++) dx[i] = NARROW(SCALAR(g[i]) * (keep[i] ? scale : 0.0f));   \
    }                                                                                                      \
  }

DROPOUT(f32, float, same, same)
DROPOUT(bf16, uint16_t, widen, narrow)
