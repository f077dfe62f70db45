// Few-row matmul for XLA:CPU decode steps: y[M, N] = x[M, K] @ W[K, N], W pre-packed as 16-column panels
// wp[N / 16][K][16]. Built on first use by few_row_matmul.py and called through an XLA FFI custom call.
//
// Why: at M <= 16 rows every GEMM library on this kind of CPU repacks W on each call, so the cost is per
// weight byte (the LM head of the bench model took the same 5 ms for 2 rows as for 12). A decode step reads
// every weight once per step; with W packed once per generate call, each panel is one contiguous stream and
// each loaded W vector feeds four rows of x (4 x 2 ymm accumulators, x broadcast from L1).
#include <immintrin.h>

#include <atomic>
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPanel = 16;

// Panels [p0, p1) for all M rows.
void PanelRange(const float* x, const float* wp, float* y, int64_t M, int64_t K, int64_t N, int64_t p0,
                int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* w = wp + p * K * kPanel;
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const int64_t rows = M - m0 < 4 ? M - m0 : 4;
      // Rows past M repeat row m0 (computed, never stored) so the inner loop has no branches.
      const float* x0 = x + m0 * K;
      const float* x1 = rows > 1 ? x0 + K : x0;
      const float* x2 = rows > 2 ? x0 + 2 * K : x0;
      const float* x3 = rows > 3 ? x0 + 3 * K : x0;
      __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
      __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
      for (int64_t k = 0; k < K; ++k) {
        const __m256 v0 = _mm256_loadu_ps(w + k * kPanel);
        const __m256 v1 = _mm256_loadu_ps(w + k * kPanel + 8);
        __m256 b = _mm256_broadcast_ss(x0 + k);
        a00 = _mm256_fmadd_ps(b, v0, a00);
        a01 = _mm256_fmadd_ps(b, v1, a01);
        b = _mm256_broadcast_ss(x1 + k);
        a10 = _mm256_fmadd_ps(b, v0, a10);
        a11 = _mm256_fmadd_ps(b, v1, a11);
        b = _mm256_broadcast_ss(x2 + k);
        a20 = _mm256_fmadd_ps(b, v0, a20);
        a21 = _mm256_fmadd_ps(b, v1, a21);
        b = _mm256_broadcast_ss(x3 + k);
        a30 = _mm256_fmadd_ps(b, v0, a30);
        a31 = _mm256_fmadd_ps(b, v1, a31);
      }
      float* out = y + m0 * N + p * kPanel;
      _mm256_storeu_ps(out, a00);
      _mm256_storeu_ps(out + 8, a01);
      if (rows > 1) { _mm256_storeu_ps(out + N, a10); _mm256_storeu_ps(out + N + 8, a11); }
      if (rows > 2) { _mm256_storeu_ps(out + 2 * N, a20); _mm256_storeu_ps(out + 2 * N + 8, a21); }
      if (rows > 3) { _mm256_storeu_ps(out + 3 * N, a30); _mm256_storeu_ps(out + 3 * N + 8, a31); }
    }
  }
}

// Shared by the caller and one task on XLA's intra-op pool. Whoever claims the second half runs it, so the
// call finishes even when no pool thread is free (the caller then runs both halves).
struct Split {
  std::atomic<int> claimed{0};
  std::atomic<int> done{0};
  std::atomic<int> refs{2};  // the caller and the task; the last one out frees it

  void Release() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
};

ffi::Error FewRowMatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wp,
                            ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto wd = wp.dimensions();
  if (xd.size() != 2 || wd.size() != 3 || wd[2] != kPanel || wd[1] != xd[1]) {
    return ffi::Error::InvalidArgument("few_row_matmul expects x [M, K] and packed w [N/16, K, 16]");
  }
  const int64_t M = xd[0], K = xd[1], P = wd[0], N = P * kPanel;
  const float* xp = x.typed_data();
  const float* w = wp.typed_data();
  float* out = y->typed_data();
  const int64_t half = P / 2;
  if (half == 0 || pool.num_threads() < 2) {
    PanelRange(xp, w, out, M, K, N, 0, P);
    return ffi::Error::Success();
  }
  // The task may start after this call has returned (then it finds the half claimed and touches no
  // buffer), so the shared state lives on the heap until both sides are done with it.
  auto* state = new Split();
  pool.Schedule([=] {
    if (state->claimed.exchange(1) == 0) {
      PanelRange(xp, w, out, M, K, N, half, P);
      state->done.store(1, std::memory_order_release);
    }
    state->Release();
  });
  PanelRange(xp, w, out, M, K, N, 0, half);
  if (state->claimed.exchange(1) == 0) {
    PanelRange(xp, w, out, M, K, N, half, P);
  } else {
    while (state->done.load(std::memory_order_acquire) == 0) _mm_pause();
  }
  state->Release();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MellamaFewRowMatmul, FewRowMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
