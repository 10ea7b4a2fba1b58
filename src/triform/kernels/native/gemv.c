/* y = x · Wᵀ + b for a few rows of x (a decoding step's batch or beams): fp32, W (N, K) row-major.

   At a few rows a product reads its whole weight from memory to do two multiply-adds per weight, so
   its speed is the speed of that read. The library kernels torch calls there ran at half of it or
   less on the machines measured (their matrix-vector paths use one thread, their matrix paths are
   tuned for many rows). This kernel splits the weight's rows among the threads, reads each block
   of four rows once, and multiplies it by every row of x while it sits in L1.

   Built by kernels/native.py with this machine's C compiler for this CPU (-march=native): the
   compiler vectorizes the `omp simd` reductions for the instruction sets the CPU has. */

#include <stdint.h>

/* Rows w[0..3] (K each) against the M rows of x, two rows of x at a time. */
static void block4(const float *x, int64_t ldx, const float *w, const float *b, float *y, int64_t ldy,
                   int64_t M, int64_t K) {
  const float *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
  int64_t m = 0;
  for (; m + 2 <= M; m += 2) {
    const float *p = x + m * ldx, *q = p + ldx;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, c0, c1, c2, c3)
    for (int64_t k = 0; k < K; k++) {
      float u = p[k], v = q[k];
      a0 += u * w0[k]; a1 += u * w1[k]; a2 += u * w2[k]; a3 += u * w3[k];
      c0 += v * w0[k]; c1 += v * w1[k]; c2 += v * w2[k]; c3 += v * w3[k];
    }
    float *r = y + m * ldy, *s = r + ldy;
    r[0] = a0 + b[0]; r[1] = a1 + b[1]; r[2] = a2 + b[2]; r[3] = a3 + b[3];
    s[0] = c0 + b[0]; s[1] = c1 + b[1]; s[2] = c2 + b[2]; s[3] = c3 + b[3];
  }
  for (; m < M; m++) {
    const float *p = x + m * ldx;
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t k = 0; k < K; k++) {
      float u = p[k];
      a0 += u * w0[k]; a1 += u * w1[k]; a2 += u * w2[k]; a3 += u * w3[k];
    }
    float *r = y + m * ldy;
    r[0] = a0 + b[0]; r[1] = a1 + b[1]; r[2] = a2 + b[2]; r[3] = a3 + b[3];
  }
}

/* x (M, K) with row stride ldx, W (N, K) contiguous, bias (N) or NULL, y (M, N) with row stride ldy. */
void triform_gemv_f32(const float *x, int64_t ldx, const float *W, const float *bias, float *y, int64_t ldy,
                      int64_t M, int64_t N, int64_t K, int threads) {
  static const float zeros[4] = {0, 0, 0, 0};
  int64_t blocks = N / 4;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t i = 0; i < blocks; i++)
    block4(x, ldx, W + 4 * i * K, bias ? bias + 4 * i : zeros, y + 4 * i, ldy, M, K);
  for (int64_t n = blocks * 4; n < N; n++) /* the last N mod 4 rows */
    for (int64_t m = 0; m < M; m++) {
      float a = bias ? bias[n] : 0;
      for (int64_t k = 0; k < K; k++) a += x[m * ldx + k] * W[n * K + k];
      y[m * ldy + n] = a;
    }
}
