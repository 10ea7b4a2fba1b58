/* softmax(q · Kᵀ · scale + mask) · V for one query per (batch, head): a decoding step's attention over
   its KV cache, K and V in fp32 or bf16 (widened as they are read), q and the result in fp32.

   A decoding step's attention reads the cache once to do two multiply-adds per element read, as a
   product of a few rows reads its weight: its speed is that read's. torch's fused kernel, built for
   blocks of queries, ran one query over 64 keys for 8 rows of 6 heads in 89 µs in fp32 and 424 µs in
   bf16 on an AMD EPYC without native bf16 (2 threads), where reading those keys and values takes some
   55 µs (fp32). Here the threads split the (batch, head) pairs; each pair's scores are formed key by
   key, the softmax taken over them in fp32, and the values summed with their weights. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "elementwise.h"
#include "kernels.h"
#include "simd.h"

enum { MASK_NONE = 0, MASK_BOOL = 1, MASK_ADDITIVE = 2 };

/* Keys are asked for ATTEND_AHEAD rows before their scores, and each value row when its key's score is
   formed, so that the value pass reads from the caches. A step's caches come from memory (the weights
   streaming through between layers evict them), where the access prefetchers alone, restarting at each
   (batch, head), kept up with neither: on an AMD EPYC (Zen 4), 1 thread, 12 attentions of 8 rows of
   6 heads over 65 keys took 0.67 ms in fp32 against 1.05 ms without, and a BART int8 step at batch 8
   2.31 ms against 2.48 (bf16: 3.10 against 3.31). */
#define ATTEND_AHEAD 16

/* The lines of a row of `bytes` bytes at p asked for ahead of their use. */
static inline void fetch_row(const void *p, int64_t bytes) {
  for (int64_t at = 0; at < bytes; at += 64) __builtin_prefetch((const char *)p + at, 0, 3);
}

/* out[i .. i + N · LANES) = Σ_t scores[t] · V[t][i ..], in N sums held in registers; a key of weight 0
   (masked) is skipped, so that whatever its value row holds never reaches the result. */
#define VALUE_SUMS(N, T, LOAD)                                                \
  {                                                                           \
    vec sums[N];                                                              \
    for (int j = 0; j < (N); j++) sums[j] = (vec){0};                         \
    for (int64_t t = 0; t < keys; t++) {                                      \
      float p = scores[t];                                                    \
      if (p == 0) continue;                                                   \
      const T *row = v + t * vt + i;                                          \
      for (int j = 0; j < (N); j++) sums[j] += p * LOAD(row + j * LANES);     \
    }                                                                         \
    for (int j = 0; j < (N); j++) memcpy(out + i + j * LANES, &sums[j], sizeof sums[j]); \
  }

/* scores[t] = s masked (a bool mask's unattended key: -inf; an additive mask: added); the larger of
   it and top. */
static inline float keep_score(float *scores, int64_t t, float s, const void *mask, int kind, int64_t mt,
                               float top) {
  if (kind == MASK_BOOL && !((const uint8_t *)mask)[t * mt]) s = -INFINITY;
  if (kind == MASK_ADDITIVE) s += ((const float *)mask)[t * mt];
  scores[t] = s;
  return s > top ? s : top;
}

/* The kernel for K and V of type T (LOAD: LANES of them as fp32; SCALAR: one). q (B, H, d) and out
   (B, H, d) contiguous fp32; K, V, mask with strides in elements (the last dimension of K and V
   contiguous, a mask's broadcast dimensions of stride 0); the mask bool (uint8, nonzero: attended)
   or fp32 added to the scores. A query whose every key is masked gets zeros. */
#define ATTENTION(NAME, T, LOAD, SCALAR)                                                                  \
  /* Key t's score: q · K[t] · scale, masked. Keys go in fours, each with its own sum (four in flight),  \
     the four added across at once (totals4), rather than each waiting on its own horizontal sum. */      \
  static void NAME##_pair(const float *q, const T *k, int64_t kt, const T *v, int64_t vt, const void *mask, \
                          int kind, int64_t mt, float *out, int64_t keys, int64_t d, float scale,          \
                          float *scores) {                                                                \
    float top = -INFINITY;                                                                                \
    int64_t t = 0;                                                                                        \
    for (; t + 4 <= keys; t += 4) {                                                                       \
      const T *k0 = k + t * kt, *k1 = k0 + kt, *k2 = k1 + kt, *k3 = k2 + kt;                              \
      for (int j = 0; j < 4; j++) {                                                                       \
        if (t + j + ATTEND_AHEAD < keys) fetch_row(k + (t + j + ATTEND_AHEAD) * kt, d * (int64_t)sizeof(T)); \
        fetch_row(v + (t + j) * vt, d * (int64_t)sizeof(T));                                              \
      }                                                                                                   \
      vec a = {0}, b = {0}, c = {0}, e = {0};                                                             \
      int64_t i = 0;                                                                                      \
      for (; i + LANES <= d; i += LANES) {                                                                \
        vec x = load_f32(q + i);                                                                          \
        a += x * LOAD(k0 + i), b += x * LOAD(k1 + i), c += x * LOAD(k2 + i), e += x * LOAD(k3 + i);        \
      }                                                                                                   \
      float s[4];                                                                                         \
      totals4(a, b, c, e, s);                                                                             \
      for (; i < d; i++)                                                                                  \
        s[0] += q[i] * SCALAR(k0[i]), s[1] += q[i] * SCALAR(k1[i]), s[2] += q[i] * SCALAR(k2[i]),         \
            s[3] += q[i] * SCALAR(k3[i]);                                                                 \
      for (int j = 0; j < 4; j++) top = keep_score(scores, t + j, s[j] * scale, mask, kind, mt, top);     \
    }                                                                                                     \
    for (; t < keys; t++) {                                                                               \
      const T *row = k + t * kt;                                                                          \
      vec a = {0};                                                                                        \
      int64_t i = 0;                                                                                      \
      for (; i + LANES <= d; i += LANES) a += load_f32(q + i) * LOAD(row + i);                            \
      float s = total(a);                                                                                 \
      for (; i < d; i++) s += q[i] * SCALAR(row[i]);                                                      \
      top = keep_score(scores, t, s * scale, mask, kind, mt, top);                                        \
    }                                                                                                     \
    for (int64_t i = 0; i < d; i++) out[i] = 0;                                                           \
    if (top == -INFINITY) return; /* nothing to attend */                                                 \
    float sum = 0;                                                                                        \
    for (int64_t t = 0; t < keys; t++) sum += scores[t] = exp_inline(scores[t] - top);                    \
    /* The values by stretches of the result held in registers over every key (8 vectors: a head of 64 \
       in one), where a result in memory waited at every key on its own store. */                      \
    int64_t i = 0;                                                                                        \
    for (; i + 8 * LANES <= d; i += 8 * LANES) VALUE_SUMS(8, T, LOAD)                                     \
    for (; i + LANES <= d; i += LANES) VALUE_SUMS(1, T, LOAD)                                             \
    for (; i < d; i++)                                                                                    \
      for (int64_t t = 0; t < keys; t++)                                                                  \
        if (scores[t] != 0) out[i] += scores[t] * SCALAR(v[t * vt + i]);                                  \
    for (int64_t i = 0; i < d; i++) out[i] /= sum;                                                        \
  }                                                                                                       \
                                                                                                          \
  int triform_decode_attention_##NAME(const float *q, const T *k, int64_t kb, int64_t kh, int64_t kt,     \
                                      const T *v, int64_t vb, int64_t vh, int64_t vt, const void *mask,   \
                                      int kind, int64_t mb, int64_t mh, int64_t mt, float *out, int64_t B, \
                                      int64_t H, int64_t keys, int64_t d, float scale, int threads) {      \
    int chunks = threads > 1 ? threads : 1;                                                               \
    float *scores = malloc(sizeof(float) * (size_t)(chunks * (keys > 0 ? keys : 1)));                     \
    if (!scores) return -1;                                                                               \
    int64_t pairs = B * H;                                                                                \
    _Pragma("omp parallel for schedule(static) num_threads(chunks) if (chunks > 1)")                     \
    for (int c = 0; c < chunks; c++) {                                                                    \
      for (int64_t p = pairs * c / chunks; p < pairs * (c + 1) / chunks; p++) {                           \
        int64_t b = p / H, h = p % H;                                                                     \
        const char *m = 0;                                                                                \
        if (kind) m = (const char *)mask + (b * mb + h * mh) * (kind == MASK_BOOL ? 1 : sizeof(float));   \
        NAME##_pair(q + p * d, k + b * kb + h * kh, kt, v + b * vb + h * vh, vt, m, kind, mt, out + p * d, \
                    keys, d, scale, scores + c * (keys > 0 ? keys : 1));                                  \
      }                                                                                                   \
    }                                                                                                     \
    free(scores);                                                                                         \
    return 0;                                                                                             \
  }

ATTENTION(f32, float, load_f32, same)
ATTENTION(bf16, uint16_t, load_bf16, widen)

/* A decoding step's whole attention for one layer, in one call: the new keys and values (if any)
   written into the KV cache at `position`, then each query head attended over the cache's first
   `keys` positions, its key/value head being h / groups (grouped-query attention). q, the new keys
   and values, and out are rows of width heads · d (q and the new ones with row stride ldq, as they
   lie in a fused projection's output), of type T, the cache of type C (PAIR: its kernel above; PUT:
   T to C); cross-attention passes no new keys. Summed in fp32 as above; the result rounded to T once.
   Returns 0, or -1 out of memory. */
#define STEP(NAME, T, C, PAIR, SCALAR, STORE, PUT)                                                        \
  ATTEND_STEP(NAME, T, C) {                                                                               \
    if (new_k)                                                                                            \
      for (int64_t b = 0; b < B; b++)                                                                     \
        for (int64_t g = 0; g < H / groups; g++) {                                                        \
          C *key = k + b * kb + g * kh + position * kt, *value = v + b * vb + g * vh + position * vt;     \
          for (int64_t i = 0; i < d; i++) {                                                               \
            key[i] = PUT(new_k[b * ldq + g * d + i]);                                                     \
            value[i] = PUT(new_v[b * ldq + g * d + i]);                                                   \
          }                                                                                               \
        }                                                                                                 \
    int chunks = threads > 1 ? threads : 1;                                                               \
    int64_t room = (keys > 0 ? keys : 1) + 2 * d; /* scores, the query and the result, per chunk */      \
    float *scratch = malloc(sizeof(float) * (size_t)(chunks * room));                                     \
    if (!scratch) return -1;                                                                              \
    int64_t pairs = B * H;                                                                                \
    _Pragma("omp parallel for schedule(static) num_threads(chunks) if (chunks > 1)")                     \
    for (int c = 0; c < chunks; c++) {                                                                    \
      float *scores = scratch + c * room, *query = scores + (keys > 0 ? keys : 1), *result = query + d;   \
      for (int64_t p = pairs * c / chunks; p < pairs * (c + 1) / chunks; p++) {                           \
        int64_t b = p / H, h = p % H, g = h / groups;                                                     \
        const char *m = 0;                                                                                \
        if (kind) m = (const char *)mask + (b * mb + h * mh) * (kind == MASK_BOOL ? 1 : sizeof(float));   \
        for (int64_t i = 0; i < d; i++) query[i] = SCALAR(q[b * ldq + h * d + i]);                        \
        PAIR##_pair(query, k + b * kb + g * kh, kt, v + b * vb + g * vh, vt, m, kind, mt, result, keys, d, \
                    scale, scores);                                                                       \
        for (int64_t i = 0; i < d; i++) out[b * ldo + h * d + i] = STORE(result[i]);                      \
      }                                                                                                   \
    }                                                                                                     \
    free(scratch);                                                                                        \
    return 0;                                                                                             \
  }

STEP(f32, float, float, f32, same, same, same)
STEP(bf16, uint16_t, uint16_t, bf16, widen, narrow, same_bits)
STEP(f32_bf16, float, uint16_t, bf16, same, same, narrow) /* fp32 rows, a bf16 cache (int8 decoding's) */
