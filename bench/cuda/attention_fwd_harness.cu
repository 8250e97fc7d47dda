// Standalone tuning harness for the mma.sync attention forward (kernels/cuda/attention_mma.cu),
// without torch, in the spirit of llm.c's dev/cuda: built here with nvcc (static cudart,
// bench/cuda/build_harness.sh) and carried to a lent GPU, where one run checks every tile
// shape against a CPU reference on fresh random data and times them on many problem
// shapes, in seconds rather than the extension's two-minute build.
//
//   attention_fwd_harness [--quick]
//
// Prints, per (dtype, head dim, causal, L) and tile shape, the time and TFLOP/s
// (4·B·H·L²·D, half when causal), and once the ceilings of this harness's own making: the
// mma.sync rate of a register-only loop and a device-to-device copy's bandwidth. The
// peers (torch SDPA's FlashAttention-2 and cuDNN backends) are measured by
// `python -m pyattn.bench --device cuda`, which needs the extension.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/attention_mma_fwd.cu"

namespace {

using pyattn::AttentionFwdParams;
using pyattn::DType;
using pyattn::MaskKind;
namespace ac = pyattn::attention_cuda;

#define CHECK_CUDA(call)                                                                                  \
  do {                                                                                                     \
    const cudaError_t err_ = (call);                                                                       \
    if (err_ != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_));       \
      std::exit(1);                                                                                        \
    }                                                                                                      \
  } while (0)

// One problem: [b, h, l, d] q, k, v (self-attention, contiguous), causal top-left or none.
struct Problem {
  int b, h, l, d;
  bool causal;
  double flops() const { return 4.0 * b * h * double(l) * l * d * (causal ? 0.5 : 1.0); }
};

template <typename T>
float to_float(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return __bfloat162float(v);
}

template <typename T>
T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else return __float2bfloat16_rn(v);
}

// Device buffers of one problem and the params that point at them.
template <typename T>
struct Buffers {
  Problem pr;
  std::vector<T> q, k, v;  // host copies (the reference's inputs)
  T *dq = nullptr, *dk = nullptr, *dv = nullptr, *dout = nullptr;
  float* dlse = nullptr;
  AttentionFwdParams p{};

  Buffers(const Problem& problem, std::mt19937& rng) : pr(problem) {
    const size_t n = size_t(pr.b) * pr.h * pr.l * pr.d;
    std::normal_distribution<float> normal;
    for (auto* host : {&q, &k, &v}) {
      host->resize(n);
      for (auto& x : *host) x = from_float<T>(normal(rng));
    }
    T** devs[] = {&dq, &dk, &dv, &dout};
    for (T** d : devs) CHECK_CUDA(cudaMalloc(d, n * sizeof(T)));
    CHECK_CUDA(cudaMalloc(&dlse, size_t(pr.b) * pr.h * pr.l * sizeof(float)));
    CHECK_CUDA(cudaMemcpy(dq, q.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(dk, k.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(dv, v.data(), n * sizeof(T), cudaMemcpyHostToDevice));

    auto& s = p.s;
    s.dtype = std::is_same_v<T, __half> ? DType::f16 : DType::bf16;
    s.batch = pr.b, s.heads_q = pr.h, s.heads_kv = pr.h, s.lq = pr.l, s.lk = pr.l, s.d = pr.d, s.dv = pr.d;
    s.scale = 1.0 / std::sqrt(double(pr.d));
    s.mask = nullptr, s.mask_kind = MaskKind::none, s.key_lengths = nullptr;
    s.diag_offset = 0, s.window_left = -1, s.window_right = pr.causal ? 0 : -1;
    s.dropout = false;
    const int64_t st[3] = {int64_t(pr.h) * pr.l * pr.d, int64_t(pr.l) * pr.d, pr.d};
    p.q = dq, p.k = dk, p.v = dv, p.out = dout, p.lse = dlse;
    for (int i = 0; i < 3; ++i) p.q_stride[i] = p.k_stride[i] = p.v_stride[i] = p.out_stride[i] = st[i];
  }
  ~Buffers() {
    for (void* d : {static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv),
                    static_cast<void*>(dout), static_cast<void*>(dlse)})
      cudaFree(d);
  }
};

template <typename T, typename Tiles>
void launch(const AttentionFwdParams& p) {
  const auto& s = p.s;
  const dim3 grid(unsigned((s.lq + Tiles::kBQ - 1) / Tiles::kBQ), unsigned(s.heads_q), unsigned(s.batch));
  ac::launch_tc(&ac::fwd_mma_kernel<T, Tiles, false>, ac::kThreads, grid, Tiles::bytes, nullptr, p);
}

// Largest |out - ref| / (1 + |ref|) over the output, and the same for lse, against a
// double-precision reference on the rounded inputs.
template <typename T>
std::pair<double, double> max_errors(const Buffers<T>& buf) {
  const Problem& pr = buf.pr;
  const size_t n = size_t(pr.b) * pr.h * pr.l * pr.d;
  std::vector<T> out(n);
  std::vector<float> lse(size_t(pr.b) * pr.h * pr.l);
  CHECK_CUDA(cudaMemcpy(out.data(), buf.dout, n * sizeof(T), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(lse.data(), buf.dlse, lse.size() * sizeof(float), cudaMemcpyDeviceToHost));
  const double scale = 1.0 / std::sqrt(double(pr.d));
  double err_out = 0, err_lse = 0;
  std::vector<double> z(pr.l), o(pr.d);
  for (int bh = 0; bh < pr.b * pr.h; ++bh) {
    const T* q = buf.q.data() + size_t(bh) * pr.l * pr.d;
    const T* k = buf.k.data() + size_t(bh) * pr.l * pr.d;
    const T* v = buf.v.data() + size_t(bh) * pr.l * pr.d;
    for (int i = 0; i < pr.l; ++i) {
      const int keys = pr.causal ? i + 1 : pr.l;
      double zmax = -INFINITY;
      for (int j = 0; j < keys; ++j) {
        double acc = 0;
        for (int e = 0; e < pr.d; ++e) acc += double(to_float(q[i * pr.d + e])) * to_float(k[j * pr.d + e]);
        z[j] = acc * scale;
        zmax = std::max(zmax, z[j]);
      }
      double sum = 0;
      std::fill(o.begin(), o.end(), 0.0);
      for (int j = 0; j < keys; ++j) {
        const double pj = std::exp(z[j] - zmax);
        sum += pj;
        for (int e = 0; e < pr.d; ++e) o[e] += pj * to_float(v[j * pr.d + e]);
      }
      const size_t row = size_t(bh) * pr.l + i;
      for (int e = 0; e < pr.d; ++e) {
        const double want = o[e] / sum;
        err_out = std::max(err_out, std::abs(to_float(out[row * pr.d + e]) - want) / (1 + std::abs(want)));
      }
      const double want_lse = zmax + std::log(sum);
      err_lse = std::max(err_lse, std::abs(lse[row] - want_lse) / (1 + std::abs(want_lse)));
    }
  }
  return {err_out, err_lse};
}

// Mean milliseconds per call over enough calls to take about 100 ms, after a warm-up.
template <typename F>
double time_ms(F&& f) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  f();
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaEventRecord(start));
  f();
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float once = 0;
  CHECK_CUDA(cudaEventElapsedTime(&once, start, stop));
  const int reps = std::clamp(int(100.f / std::max(once, 1e-3f)), 3, 200);
  CHECK_CUDA(cudaEventRecord(start));
  for (int r = 0; r < reps; ++r) f();
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float total = 0;
  CHECK_CUDA(cudaEventElapsedTime(&total, start, stop));
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return double(total) / reps;
}

// The tile shapes tried per head dim; each compiles without spills on sm_80 and sm_90
// (build_harness.sh prints ptxas's counts). 32 rows per warp with 128 keys at D64, or
// with 32 keys at D128, spill.
template <int D>
struct Variants;
template <>
struct Variants<64> {
  using List = std::tuple<ac::FwdTiles<64, 2, 64>, ac::FwdTiles<64, 1, 64>, ac::FwdTiles<64, 1, 128>>;
};
template <>
struct Variants<128> {
  using List = std::tuple<ac::FwdTiles<128, 1, 64>, ac::FwdTiles<128, 1, 32>, ac::FwdTiles<128, 1, 128>>;
};

template <typename Tiles>
std::string name_of() {
  return "rows/warp " + std::to_string(16 * Tiles::kMT) + " keys/tile " + std::to_string(Tiles::kBK) +
         (std::is_same_v<Tiles, ac::DefaultFwdTiles<Tiles::D>> ? " (default)" : "");
}

template <typename T, typename Tiles>
bool check_one(std::mt19937& rng, bool causal) {
  // Ragged sizes: partial query blocks and key tiles.
  Buffers<T> buf(Problem{1, 3, 333, Tiles::D, causal}, rng);
  launch<T, Tiles>(buf.p);
  CHECK_CUDA(cudaDeviceSynchronize());
  const auto [eo, el] = max_errors(buf);
  const double tol = std::is_same_v<T, __half> ? 4e-3 : 3e-2;
  const bool ok = eo < tol && el < 1e-3;
  std::printf("check %-5s D%-3d causal=%d %-34s out err %.2e lse err %.2e %s\n",
              std::is_same_v<T, __half> ? "fp16" : "bf16", Tiles::D, int(causal), name_of<Tiles>().c_str(), eo, el,
              ok ? "ok" : "FAILED");
  return ok;
}

template <typename T, int D>
bool run(std::mt19937& rng, bool quick) {
  bool ok = true;
  std::apply([&](auto... tiles) { ((ok &= check_one<T, decltype(tiles)>(rng, false) & check_one<T, decltype(tiles)>(rng, true)), ...); },
             typename Variants<D>::List{});
  if (!ok) return false;
  const std::vector<int> lengths = quick ? std::vector<int>{4096} : std::vector<int>{1024, 2048, 4096, 8192, 16384};
  for (bool causal : {false, true})
    for (int l : lengths) {
      // B·H·L = 16·4·4096 tokens, as issue 13's table: B4 H16 at L4096, B1 at L16384.
      const int h = 16, b = std::max(1, 4 * 4096 / l);
      Buffers<T> buf(Problem{b, h, l, D, causal}, rng);
      std::apply(
          [&](auto... tiles) {
            (([&] {
               using Tiles = decltype(tiles);
               const double ms = time_ms([&] { launch<T, Tiles>(buf.p); });
               std::printf("time  %-5s D%-3d causal=%d B%-2d H%d L%-5d %-34s %8.3f ms %7.1f TFLOP/s\n",
                           std::is_same_v<T, __half> ? "fp16" : "bf16", D, int(causal), b, h, l,
                           name_of<Tiles>().c_str(), ms, buf.pr.flops() / ms * 1e-9);
             }()),
             ...);
          },
          typename Variants<D>::List{});
    }
  return true;
}

// The mma.sync ceiling: every warp runs independent m16n8k16 products on registers.
template <typename T>
__global__ void mma_peak_kernel(float* sink, int iters) {
  uint32_t a[4] = {threadIdx.x, threadIdx.x * 3u, threadIdx.x * 5u, threadIdx.x * 7u}, b[2] = {threadIdx.x, 1u};
  float d[8][4] = {};
  for (int it = 0; it < iters; ++it)
#pragma unroll
    for (int c = 0; c < 8; ++c) pyattn::ptx::mma_16816<T>(d[c], a, b);
  float acc = 0;
  for (auto& c : d)
    for (float x : c) acc += x;
  if (acc == 1.2345f) sink[0] = acc;  // keeps the products live
}

void ceilings() {
  int dev = 0, sms = 0;
  CHECK_CUDA(cudaGetDevice(&dev));
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  std::printf("device %s, %d SMs, compute capability %d.%d\n", prop.name, sms, prop.major, prop.minor);
  float* sink = nullptr;
  CHECK_CUDA(cudaMalloc(&sink, 4));
  const int iters = 4096, blocks = sms * 8, threads = 256;
  const double ms = time_ms([&] { mma_peak_kernel<__nv_bfloat16><<<blocks, threads>>>(sink, iters); });
  const double flops = 2.0 * 16 * 8 * 16 * 8 * double(iters) * blocks * (threads / 32);
  std::printf("ceiling mma.sync bf16 m16n8k16 (registers only): %.1f TFLOP/s\n", flops / ms * 1e-9);
  const size_t bytes = size_t(1) << 30;
  void *src = nullptr, *dst = nullptr;
  CHECK_CUDA(cudaMalloc(&src, bytes));
  CHECK_CUDA(cudaMalloc(&dst, bytes));
  const double cms = time_ms([&] { CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); });
  std::printf("ceiling copy (read + write): %.2f TB/s\n", 2.0 * bytes / cms * 1e-9);
  cudaFree(src);
  cudaFree(dst);
  cudaFree(sink);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::random_device seed_source;
  const unsigned seed = seed_source();
  std::printf("seed %u\n", seed);
  std::mt19937 rng(seed);
  ceilings();
  bool ok = run<__nv_bfloat16, 64>(rng, quick);
  ok &= run<__nv_bfloat16, 128>(rng, quick);
  ok &= run<__half, 128>(rng, quick);
  std::printf(ok ? "all checks passed\n" : "SOME CHECKS FAILED\n");
  return ok ? 0 : 1;
}
