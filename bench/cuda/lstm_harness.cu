// Standalone tuning harness for the persistent LSTM kernels (kernels/cuda/
// lstm_persistent.cu and lstm_persistent_mma.cu), without torch, as attention_harness.cu
// is for attention: built here with nvcc (bench/cuda/build_harness.sh) and carried to a
// lent GPU, where one run checks the kernels against a CPU double reference on fresh
// random data, then times them at the issue's shapes.
//
//   lstm_harness [--quick]
//
// Per (dtype, batch, hidden) it prints the milliseconds of the recurrent loop of a
// T-step sequence forward and backward (the kernels alone: x·W_ihᵀ before and the weight
// gradients after are ATen GEMMs in the extension) and the microseconds per step, or
// "declined" where neither persistent kernel takes the shape (the extension then runs
// its per-step loop). fp32 runs as TF32 ("tf32") or strict (3xTF32 past 8 rows, fp32 CUDA
// cores up to 8). cuDNN, the peer, is timed by
// `python -m pyattn.bench --ops lstm --device cuda`, which needs the extension.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "harness_common.cuh"
#include "pyattn/lstm.h"

namespace {

using pyattn::DType;
using pyattn::LstmSeqCudaBwdParams;
using pyattn::LstmSeqCudaFwdParams;

template <typename T>
__host__ __device__ float to_float(T v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return __bfloat162float(v);
}

template <typename T>
__host__ __device__ T from_float(float v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else return __float2bfloat16_rn(v);
}

template <typename T>
DType dtype_of() {
  return std::is_same_v<T, float> ? DType::f32 : std::is_same_v<T, __half> ? DType::f16 : DType::bf16;
}

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// A dense sequence of T steps of n rows, hidden H, W_ih the identity (act_in is the
// input product): the data as stored (T), rounded values kept in double for the reference.
struct Problem {
  int T, n, H;
};

struct HostData {
  std::vector<double> act_in, w, b, h0, c0, dy, dh_n, dc_n;
};

HostData random_data(const Problem& pr, std::mt19937& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  const size_t H = pr.H, G = 4 * H, rows = size_t(pr.T) * pr.n;
  HostData d;
  auto fill = [&](std::vector<double>& v, size_t count, double std) {
    v.resize(count);
    for (double& x : v) x = normal(rng) * std;
  };
  fill(d.act_in, rows * G, 1.0);
  fill(d.w, G * H, 1.0 / std::sqrt(double(H)));
  fill(d.b, G, 1.0);
  fill(d.h0, pr.n * H, 1.0);
  fill(d.c0, pr.n * H, 1.0);
  fill(d.dy, rows * H, 1.0);
  fill(d.dh_n, pr.n * H, 1.0);
  fill(d.dc_n, pr.n * H, 1.0);
  return d;
}

// The reference, in double: y [rows, H], then from dy, dh_n, dc_n: dgates [rows, 4H],
// dh0, dc0 [n, H] (rows = T·n, time-major).
struct Truth {
  std::vector<double> y, dgates, dh0, dc0;
};

Truth reference(const Problem& pr, const HostData& d) {
  const int n = pr.n, H = pr.H, G = 4 * H;
  const size_t rows = size_t(pr.T) * n;
  std::vector<double> act(rows * G), c_all(rows * H), z(G);
  Truth t;
  t.y.assign(rows * H, 0);
  std::vector<double> h = d.h0, c = d.c0;
  for (int s = 0; s < pr.T; ++s) {
    for (int r = 0; r < n; ++r) {
      const size_t row = size_t(s) * n + r;
      for (int q = 0; q < G; ++q) {
        double acc = d.act_in[row * G + q] + d.b[q];
        for (int k = 0; k < H; ++k) acc += h[size_t(r) * H + k] * d.w[size_t(q) * H + k];
        z[q] = acc;
      }
      for (int j = 0; j < H; ++j) {
        const double i = sigmoid(z[j]), f = sigmoid(z[H + j]), g = std::tanh(z[2 * H + j]), o = sigmoid(z[3 * H + j]);
        const double cn = f * c[size_t(r) * H + j] + i * g;
        act[row * G + j] = i;
        act[row * G + H + j] = f;
        act[row * G + 2 * H + j] = g;
        act[row * G + 3 * H + j] = o;
        c_all[row * H + j] = cn;
        t.y[row * H + j] = o * std::tanh(cn);
      }
    }
    for (int r = 0; r < n; ++r)
      for (int j = 0; j < H; ++j) {
        h[size_t(r) * H + j] = t.y[(size_t(s) * n + r) * H + j];
        c[size_t(r) * H + j] = c_all[(size_t(s) * n + r) * H + j];
      }
  }
  t.dgates.assign(rows * G, 0);
  std::vector<double> dh = d.dh_n, dc = d.dc_n;
  for (int s = pr.T - 1; s >= 0; --s) {
    for (int r = 0; r < n; ++r) {
      const size_t row = size_t(s) * n + r;
      for (int j = 0; j < H; ++j) {
        const double dht = dh[size_t(r) * H + j] + d.dy[row * H + j];
        const double i = act[row * G + j], f = act[row * G + H + j], g = act[row * G + 2 * H + j],
                     o = act[row * G + 3 * H + j];
        const double cprev = s ? c_all[(row - n) * H + j] : d.c0[size_t(r) * H + j];
        const double tc = std::tanh(c_all[row * H + j]);
        const double dct = dc[size_t(r) * H + j] + dht * o * (1 - tc * tc);
        t.dgates[row * G + j] = dct * g * i * (1 - i);
        t.dgates[row * G + H + j] = dct * cprev * f * (1 - f);
        t.dgates[row * G + 2 * H + j] = dct * i * (1 - g * g);
        t.dgates[row * G + 3 * H + j] = dht * tc * o * (1 - o);
        dc[size_t(r) * H + j] = dct * f;
      }
      for (int k = 0; k < H; ++k) {  // dh of the step before: dgates · W_hh
        double acc = 0;
        for (int q = 0; q < G; ++q) acc += t.dgates[row * G + q] * d.w[size_t(q) * H + k];
        dh[size_t(r) * H + k] = acc;
      }
    }
  }
  t.dh0 = dh;
  t.dc0 = dc;
  return t;
}

// Device buffers of one problem in storage type T, with the params of both kernels.
template <typename T>
struct Run {
  Problem pr;
  std::vector<T*> owned;
  unsigned* barrier = nullptr;
  LstmSeqCudaFwdParams fwd{};
  LstmSeqCudaBwdParams bwd{};

  T* alloc(size_t count) {
    T* p = nullptr;
    CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
    owned.push_back(p);
    return p;
  }
  Run(const Problem& problem, bool tf32) : pr(problem) {
    const size_t H = pr.H, G = 4 * H, rows = size_t(pr.T) * pr.n;
    CHECK_CUDA(cudaMalloc(&barrier, sizeof(unsigned)));
    T *act = alloc(rows * G), *w = alloc(G * H), *b = alloc(G), *h0 = alloc(pr.n * H), *c0 = alloc(pr.n * H);
    T *y = alloc(rows * H), *c_all = alloc(rows * H), *h_n = alloc(pr.n * H), *c_n = alloc(pr.n * H);
    T *dy = alloc(rows * H), *dgates = alloc(rows * G), *db = alloc(G), *dh = alloc(pr.n * H), *dc = alloc(pr.n * H);
    fwd = LstmSeqCudaFwdParams{w, {b, nullptr}, act, c_all, y, h0, c0, h_n, c_n, nullptr, false,
                               pr.T, pr.n, pr.H, barrier, dtype_of<T>(), tf32};
    bwd = LstmSeqCudaBwdParams{w, dy, act, c_all, c0, dgates, db, dh, dc, nullptr, false,
                               pr.T, pr.n, pr.H, barrier, dtype_of<T>(), tf32};
  }
  ~Run() {
    for (T* p : owned) cudaFree(p);
    cudaFree(barrier);
  }
  static void upload(void* dst, const std::vector<double>& v) {
    std::vector<T> t(v.size());
    for (size_t i = 0; i < v.size(); ++i) t[i] = from_float<T>(float(v[i]));
    CHECK_CUDA(cudaMemcpy(dst, t.data(), t.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  static std::vector<double> download(const void* src, size_t count) {
    std::vector<T> t(count);
    CHECK_CUDA(cudaMemcpy(t.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<double> v(count);
    for (size_t i = 0; i < count; ++i) v[i] = to_float(t[i]);
    return v;
  }
  bool forward() { return pyattn::lstm_seq_fwd_persistent_cuda(fwd, nullptr); }
  bool backward() {
    CHECK_CUDA(cudaMemset(bwd.dbias, 0, 4 * size_t(pr.H) * sizeof(T)));
    return pyattn::lstm_seq_bwd_persistent_cuda(bwd, nullptr);
  }
};

// Largest |got - want| / (1 + |want|).
double max_error(const std::vector<double>& got, const std::vector<double>& want) {
  double err = 0;
  for (size_t i = 0; i < want.size(); ++i) err = std::max(err, std::abs(got[i] - want[i]) / (1 + std::abs(want[i])));
  return err;
}

// Runs both kernels on fresh random data and compares y, dgates, dh0, dc0 with the
// reference (the inputs rounded to T first, so only the kernels' own rounding counts).
template <typename T>
bool check(const Problem& pr, bool tf32, double tol, const char* name, std::mt19937& rng) {
  HostData d = random_data(pr, rng);
  auto round = [](std::vector<double>& v) {
    for (double& x : v) x = to_float(from_float<T>(float(x)));
  };
  for (auto* v : {&d.act_in, &d.w, &d.b, &d.h0, &d.c0, &d.dy, &d.dh_n, &d.dc_n}) round(*v);
  Run<T> run(pr, tf32);
  Run<T>::upload(run.fwd.act, d.act_in);
  Run<T>::upload(const_cast<void*>(run.fwd.w_hh), d.w);
  Run<T>::upload(const_cast<void*>(run.fwd.bias[0]), d.b);
  Run<T>::upload(const_cast<void*>(run.fwd.h0), d.h0);
  Run<T>::upload(const_cast<void*>(run.fwd.c0), d.c0);
  Run<T>::upload(const_cast<void*>(run.bwd.dy), d.dy);
  Run<T>::upload(run.bwd.dh_state, d.dh_n);
  Run<T>::upload(run.bwd.dc_state, d.dc_n);
  const size_t H = pr.H, rows = size_t(pr.T) * pr.n;
  std::printf("check %-11s T%d n%d H%d: ", name, pr.T, pr.n, pr.H);
  if (!run.forward() || !run.backward()) {
    std::printf("declined\n");
    return true;
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  const Truth t = reference(pr, d);
  const double errs[4] = {max_error(Run<T>::download(run.fwd.y, rows * H), t.y),
                          max_error(Run<T>::download(run.bwd.dgates, rows * 4 * H), t.dgates),
                          max_error(Run<T>::download(run.bwd.dh_state, pr.n * H), t.dh0),
                          max_error(Run<T>::download(run.bwd.dc_state, pr.n * H), t.dc0)};
  const bool ok = *std::max_element(errs, errs + 4) <= tol;
  std::printf("y %.2e dgates %.2e dh0 %.2e dc0 %.2e (tol %.0e) %s\n", errs[0], errs[1], errs[2], errs[3], tol,
              ok ? "ok" : "FAIL");
  return ok;
}

// Fills a device array with values uniform in [-scale, scale) from a counter hash: the
// timing shapes are too big to draw on the host in a moment.
template <typename T>
__global__ void fill_kernel(T* p, size_t count, unsigned seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x) {
    unsigned x = unsigned(i) * 2654435761u ^ seed;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    p[i] = from_float<T>(scale * (float(x) * 4.656613e-10f - 1.0f));
  }
}

template <typename T>
void fill(const void* p, size_t count, unsigned seed, float scale) {
  fill_kernel<T><<<1024, 256>>>(static_cast<T*>(const_cast<void*>(p)), count, seed, scale);
  CHECK_CUDA(cudaGetLastError());
}

// Times both kernels at one shape on device-filled data.
template <typename T>
void time_shape(const Problem& pr, bool tf32, const char* name, unsigned seed) {
  Run<T> run(pr, tf32);
  const size_t H = pr.H, rows = size_t(pr.T) * pr.n;
  fill<T>(run.fwd.act, rows * 4 * H, seed, 1.0f);
  fill<T>(run.fwd.w_hh, 4 * H * H, seed + 1, 1.7f / std::sqrt(float(H)));
  fill<T>(run.fwd.bias[0], 4 * H, seed + 2, 1.0f);
  fill<T>(run.fwd.h0, pr.n * H, seed + 3, 1.0f);
  fill<T>(run.fwd.c0, pr.n * H, seed + 4, 1.0f);
  fill<T>(run.bwd.dy, rows * H, seed + 5, 1.0f);
  std::printf("time  %-11s T%d n%-3d H%-4d: ", name, pr.T, pr.n, pr.H);
  if (!run.forward()) {
    std::printf("declined\n");
    return;
  }
  const double f = harness::time_ms([&] { run.forward(); });
  fill<T>(run.bwd.dh_state, pr.n * H, seed + 6, 1.0f);
  fill<T>(run.bwd.dc_state, pr.n * H, seed + 7, 1.0f);
  if (!run.backward()) {
    std::printf("forward %.3f ms (%.2f us/step), backward declined\n", f, 1e3 * f / pr.T);
    return;
  }
  const double b = harness::time_ms([&] { run.backward(); });
  std::printf("forward %.3f ms (%.2f us/step), backward %.3f ms (%.2f us/step)\n", f, 1e3 * f / pr.T, b,
              1e3 * b / pr.T);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::random_device seed_source;
  const unsigned seed = seed_source();
  std::printf("seed %u\n", seed);
  std::mt19937 rng(seed);
  harness::print_device();
  // Checks: batches of 7 (CUDA-core kernels) and 17-256 (tensor-core), H small enough
  // for the reference; tolerances as tests/test_cuda_emulated.py's.
  bool ok = true;
  const Problem checks[] = {{5, 7, 96}, {5, 40, 64}, {4, 17, 512}, {3, 256, 128}};
  for (const Problem& pr : checks) {
    ok &= check<__nv_bfloat16>(pr, false, 6e-2, "bf16", rng);
    ok &= check<__half>(pr, false, 1e-2, "fp16", rng);
    ok &= check<float>(pr, true, 2e-3, "fp32 tf32", rng);
    ok &= check<float>(pr, false, 1e-4, "fp32 strict", rng);
  }
  // Timing: T 100 at the issue's shapes.
  std::vector<Problem> shapes = {{100, 8, 512}, {100, 64, 512}};
  if (!quick) shapes.insert(shapes.end(), {{100, 1, 512}, {100, 16, 512}, {100, 256, 512}, {100, 64, 1024},
                                           {100, 256, 1024}});
  for (const Problem& pr : shapes) {
    time_shape<__nv_bfloat16>(pr, false, "bf16", seed);
    time_shape<float>(pr, true, "fp32 tf32", seed);
    time_shape<float>(pr, false, "fp32 strict", seed);
  }
  std::printf(ok ? "all checks passed\n" : "SOME CHECKS FAILED\n");
  return ok ? 0 : 1;
}
