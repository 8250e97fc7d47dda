// Standalone tuning harness for the mma.sync attention kernels
// (kernels/cuda/attention_mma_fwd.cu, attention_mma_bwd.cu), without torch, in the spirit
// of llm.c's dev/cuda: built here with nvcc (static cudart, bench/cuda/build_harness.sh)
// and carried to a lent GPU, where one run checks every tile shape against a CPU
// reference on fresh random data and times them on many problem shapes, in seconds
// rather than the extension's two-minute build.
//
//   attention_harness [--quick]
//
// Prints, per (dtype, head dim, causal, L) and tile shape, the time and TFLOP/s of the
// forward (4·B·H·L²·D FLOPs, half when causal) and of the backward (2.5 times that, the
// convention FlashAttention's papers use: 5 products of the forward's size; ours
// computes 7, see attention_mma_bwd.cu), and once the ceilings of this harness's own
// making: the mma.sync rate of a register-only loop and a device-to-device copy's
// bandwidth. The peers (torch SDPA's FlashAttention-2 and cuDNN backends) are measured by
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

#include "harness_common.cuh"
#include "cuda/attention_mma_bwd.cu"
#include "cuda/attention_mma_fwd.cu"

namespace {

using pyattn::AttentionBwdParams;
using pyattn::AttentionFwdParams;
using pyattn::DType;
using pyattn::MaskKind;
namespace ac = pyattn::attention_cuda;

// One problem: [b, h, l, d] q, k, v (self-attention, contiguous), causal top-left or none.
struct Problem {
  int b, h, l, d;
  bool causal;
  double fwd_flops() const { return 4.0 * b * h * double(l) * l * d * (causal ? 0.5 : 1.0); }
};

template <typename T>
constexpr const char* type_name() {
  return std::is_same_v<T, float> ? "fp32" : std::is_same_v<T, __half> ? "fp16" : "bf16";
}

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

// Pseudo-normal values (four uniforms from a hash of the index, centred, unit variance)
// for the timing problems: filled on the device, since drawing hundreds of MB on the host
// would take most of the run.
template <typename T>
__global__ void fill_kernel(T* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (uint32_t j = 0; j < 4; ++j) {
      uint32_t hsh = uint32_t(i) * 4u + j + seed * 0x9E3779B9u + uint32_t(i >> 32) * 0x85EBCA6Bu;
      hsh ^= hsh >> 16, hsh *= 0x7FEB352Du, hsh ^= hsh >> 15, hsh *= 0x846CA68Bu, hsh ^= hsh >> 16;
      sum += float(hsh) * 2.3283064e-10f;  // [0, 1)
    }
    x[i] = from_float<T>((sum - 2.f) * 1.7320508f);  // variance of the sum: 4/12
  }
}

// Device buffers of one problem and the params that point at them. q, k, v and dout are
// random (drawn on the host, and kept there for the reference, when `host_copy`); out and
// lse come from the forward.
template <typename T>
struct Buffers {
  Problem pr;
  size_t n;                      // elements of each [b, h, l, d] tensor
  std::vector<T> q, k, v, dout;  // host copies (the reference's inputs)
  std::vector<void*> owned;
  T *dq_in, *dk_in, *dv_in, *ddout, *dout_fwd, *dgq, *dgk, *dgv;
  float *dlse, *drow_delta;
  AttentionFwdParams fwd{};
  AttentionBwdParams bwd{};

  template <typename P>
  P* alloc(size_t count) {
    void* ptr = nullptr;
    CHECK_CUDA(cudaMalloc(&ptr, count * sizeof(P)));
    owned.push_back(ptr);
    return static_cast<P*>(ptr);
  }

  Buffers(const Problem& problem, std::mt19937& rng, bool host_copy)
      : pr(problem), n(size_t(pr.b) * pr.h * pr.l * pr.d) {
    std::normal_distribution<float> normal;
    T** devs[] = {&dq_in, &dk_in, &dv_in, &ddout};
    std::vector<T>* hosts[] = {&q, &k, &v, &dout};
    for (int i = 0; i < 4; ++i) {
      *devs[i] = alloc<T>(n);
      if (host_copy) {
        hosts[i]->resize(n);
        for (auto& x : *hosts[i]) x = from_float<T>(normal(rng));
        CHECK_CUDA(cudaMemcpy(*devs[i], hosts[i]->data(), n * sizeof(T), cudaMemcpyHostToDevice));
      } else {
        fill_kernel<<<1024, 256>>>(*devs[i], n, uint32_t(rng()));
        CHECK_CUDA(cudaGetLastError());
      }
    }
    dout_fwd = alloc<T>(n), dgq = alloc<T>(n), dgk = alloc<T>(n), dgv = alloc<T>(n);
    dlse = alloc<float>(size_t(pr.b) * pr.h * pr.l);
    drow_delta = alloc<float>(size_t(pr.b) * pr.h * pr.l);

    pyattn::AttentionShape s{};
    s.dtype = std::is_same_v<T, float> ? DType::f32 : std::is_same_v<T, __half> ? DType::f16 : DType::bf16;
    s.batch = pr.b, s.heads_q = pr.h, s.heads_kv = pr.h, s.lq = pr.l, s.lk = pr.l, s.d = pr.d, s.dv = pr.d;
    s.scale = 1.0 / std::sqrt(double(pr.d));
    s.mask = nullptr, s.mask_kind = MaskKind::none, s.key_lengths = nullptr;
    s.diag_offset = 0, s.window_left = -1, s.window_right = pr.causal ? 0 : -1;
    s.dropout = false;
    const int64_t st[3] = {int64_t(pr.h) * pr.l * pr.d, int64_t(pr.l) * pr.d, pr.d};
    fwd.s = bwd.s = s;
    fwd.q = bwd.q = dq_in, fwd.k = bwd.k = dk_in, fwd.v = bwd.v = dv_in;
    fwd.out = dout_fwd, fwd.lse = dlse;
    bwd.out = dout_fwd, bwd.dout = ddout, bwd.lse = dlse, bwd.dlse = nullptr;
    bwd.dq = dgq, bwd.dk = dgk, bwd.dv = dgv, bwd.dmask = nullptr, bwd.row_delta = drow_delta;
    for (int i = 0; i < 3; ++i) {
      fwd.q_stride[i] = fwd.k_stride[i] = fwd.v_stride[i] = fwd.out_stride[i] = st[i];
      bwd.q_stride[i] = bwd.k_stride[i] = bwd.v_stride[i] = bwd.out_stride[i] = bwd.dout_stride[i] = st[i];
      bwd.dq_stride[i] = bwd.dk_stride[i] = bwd.dv_stride[i] = st[i];
    }
  }
  ~Buffers() {
    for (void* ptr : owned) cudaFree(ptr);
  }
  std::vector<T> download(const T* dev) const {
    std::vector<T> host(n);
    CHECK_CUDA(cudaMemcpy(host.data(), dev, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

template <typename T, typename Tiles>
void launch_fwd(const AttentionFwdParams& p) {
  const auto& s = p.s;
  const dim3 grid(unsigned((s.lq + Tiles::kBQ - 1) / Tiles::kBQ), unsigned(s.heads_q), unsigned(s.batch));
  ac::launch_tc(&ac::fwd_mma_kernel<T, Tiles, false>, ac::kThreads, grid, Tiles::bytes, nullptr, p);
}

// The two backward kernels, as bwd_tensor_cores launches them.
template <typename T, typename Dq, typename Dkdv>
void launch_bwd(const AttentionBwdParams& p) {
  const auto& s = p.s;
  ac::launch_tc(&ac::dq_mma_kernel<T, Dq, false>, ac::kThreads,
                dim3(unsigned((s.lq + Dq::kBQ - 1) / Dq::kBQ), unsigned(s.heads_q), unsigned(s.batch)), Dq::bytes,
                nullptr, p);
  ac::launch_tc(&ac::dkdv_mma_kernel<T, Dkdv, false>, ac::kThreads,
                dim3(unsigned((s.lk + Dkdv::kBKeys - 1) / Dkdv::kBKeys * Dkdv::kColSplit), unsigned(s.heads_kv),
                     unsigned(s.batch)),
                Dkdv::bytes, nullptr, p);
}

// The double-precision truth on the rounded inputs: out, lse, dq, dk, dv.
struct Truth {
  std::vector<double> out, lse, dq, dk, dv;
};

template <typename T>
Truth reference(const Buffers<T>& buf) {
  const Problem& pr = buf.pr;
  const int L = pr.l, D = pr.d;
  const double scale = 1.0 / std::sqrt(double(D));
  Truth t{std::vector<double>(buf.n), std::vector<double>(size_t(pr.b) * pr.h * L), std::vector<double>(buf.n),
          std::vector<double>(buf.n), std::vector<double>(buf.n)};
  std::vector<double> p(size_t(L) * L), ds(size_t(L) * L);
  for (int bh = 0; bh < pr.b * pr.h; ++bh) {
    const size_t base = size_t(bh) * L * D;
    auto at = [&](const std::vector<T>& x, int row, int col) { return double(to_float(x[base + size_t(row) * D + col])); };
    for (int i = 0; i < L; ++i) {
      const int keys = pr.causal ? i + 1 : L;
      double zmax = -INFINITY;
      for (int j = 0; j < keys; ++j) {
        double z = 0;
        for (int e = 0; e < D; ++e) z += at(buf.q, i, e) * at(buf.k, j, e);
        p[size_t(i) * L + j] = z * scale;
        zmax = std::max(zmax, z * scale);
      }
      double sum = 0;
      for (int j = 0; j < keys; ++j) sum += std::exp(p[size_t(i) * L + j] - zmax);
      for (int j = 0; j < L; ++j) p[size_t(i) * L + j] = j < keys ? std::exp(p[size_t(i) * L + j] - zmax) / sum : 0.0;
      t.lse[size_t(bh) * L + i] = zmax + std::log(sum);
      for (int e = 0; e < D; ++e) {
        double o = 0;
        for (int j = 0; j < keys; ++j) o += p[size_t(i) * L + j] * at(buf.v, j, e);
        t.out[base + size_t(i) * D + e] = o;
      }
      double delta = 0;  // dO_i . O_i
      for (int e = 0; e < D; ++e) delta += at(buf.dout, i, e) * t.out[base + size_t(i) * D + e];
      for (int j = 0; j < L; ++j) {
        double dp = 0;
        for (int e = 0; e < D; ++e) dp += at(buf.dout, i, e) * at(buf.v, j, e);
        ds[size_t(i) * L + j] = p[size_t(i) * L + j] * (dp - delta);
      }
    }
    for (int i = 0; i < L; ++i)
      for (int e = 0; e < D; ++e) {
        double acc = 0;
        for (int j = 0; j < L; ++j) acc += ds[size_t(i) * L + j] * at(buf.k, j, e);
        t.dq[base + size_t(i) * D + e] = scale * acc;
      }
    for (int j = 0; j < L; ++j)
      for (int e = 0; e < D; ++e) {
        double gk = 0, gv = 0;
        for (int i = 0; i < L; ++i) {
          gk += ds[size_t(i) * L + j] * at(buf.q, i, e);
          gv += p[size_t(i) * L + j] * at(buf.dout, i, e);
        }
        t.dk[base + size_t(j) * D + e] = scale * gk;
        t.dv[base + size_t(j) * D + e] = gv;
      }
  }
  return t;
}

// Largest |got - want| / (1 + |want|).
template <typename G>
double max_error(const std::vector<G>& got, const std::vector<double>& want) {
  double err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = to_float(got[i]);
    err = std::max(err, std::abs(g - want[i]) / (1 + std::abs(want[i])));
  }
  return err;
}

using harness::time_ms;

// The tile shapes tried per element type and head dim; each compiles without spills on
// sm_80 and sm_90 (build_harness.sh prints ptxas's counts). Left out because they spill:
// the 16-bit forward with 32 rows per warp and 128 keys at D64 or 32 keys at D128, and
// dk/dv with 64 queries a tile at D64.
template <typename T, int D>
struct Variants;
template <typename T>
struct Variants<T, 64> {
  using Fwd = std::tuple<ac::FwdTiles<T, 64, 2, 64>, ac::FwdTiles<T, 64, 1, 64>, ac::FwdTiles<T, 64, 1, 128>>;
  using Bwd = std::tuple<std::pair<ac::DqTiles<T, 64, 1, 64>, ac::DkdvTiles<T, 64, 1, 32>>,
                         std::pair<ac::DqTiles<T, 64, 1, 128>, ac::DkdvTiles<T, 64, 1, 16>>>;
};
template <typename T>
struct Variants<T, 128> {
  using Fwd = std::tuple<ac::FwdTiles<T, 128, 1, 64>, ac::FwdTiles<T, 128, 1, 32>, ac::FwdTiles<T, 128, 1, 128>>;
  using Bwd = std::tuple<std::pair<ac::DqTiles<T, 128, 1, 64>, ac::DkdvTiles<T, 128, 1, 32>>,
                         std::pair<ac::DqTiles<T, 128, 1, 32>, ac::DkdvTiles<T, 128, 1, 16>>>;
};
template <typename T>
struct Variants<T, 256> {
  using Fwd = std::tuple<ac::FwdTiles<T, 256, 1, 32>, ac::FwdTiles<T, 256, 1, 16>>;
  using Bwd = std::tuple<std::pair<ac::DqTiles<T, 256, 1, 32>, ac::DkdvTiles<T, 256, 1, 32, 2>>,
                         std::pair<ac::DqTiles<T, 256, 1, 16>, ac::DkdvTiles<T, 256, 1, 16, 2>>>;
};
// fp32 (3xTF32): the split operands take registers and the tiles twice the shared
// memory, so smaller tiles (these fit sm_90 without spills).
template <>
struct Variants<float, 64> {
  using Fwd = std::tuple<ac::FwdTiles<float, 64, 2, 32>, ac::FwdTiles<float, 64, 1, 64>, ac::FwdTiles<float, 64, 1, 32>>;
  using Bwd = std::tuple<std::pair<ac::DqTiles<float, 64, 1, 64>, ac::DkdvTiles<float, 64, 1, 32>>,
                         std::pair<ac::DqTiles<float, 64, 1, 64>, ac::DkdvTiles<float, 64, 1, 16>>>;
};
template <>
struct Variants<float, 128> {
  using Fwd = std::tuple<ac::FwdTiles<float, 128, 1, 32>, ac::FwdTiles<float, 128, 1, 64>, ac::FwdTiles<float, 128, 1, 16>>;
  using Bwd = std::tuple<std::pair<ac::DqTiles<float, 128, 1, 16>, ac::DkdvTiles<float, 128, 1, 32>>,
                         std::pair<ac::DqTiles<float, 128, 1, 16>, ac::DkdvTiles<float, 128, 1, 16>>>;
};

template <typename T, typename Tiles>
std::string fwd_name() {
  return "fwd rows/warp " + std::to_string(16 * Tiles::kMT) + " keys/tile " + std::to_string(Tiles::kBK) +
         (std::is_same_v<Tiles, ac::DefaultFwdTiles<T, Tiles::D>> ? " (default)" : "");
}

template <typename T, typename Pair>
std::string bwd_name() {
  using Dq = typename Pair::first_type;
  using Dkdv = typename Pair::second_type;
  const bool dflt =
      std::is_same_v<Dq, ac::DefaultDqTiles<T, Dq::D>> && std::is_same_v<Dkdv, ac::DefaultDkdvTiles<T, Dq::D>>;
  return "bwd dq keys/tile " + std::to_string(Dq::kBK) + " dkdv queries/tile " + std::to_string(Dkdv::kBQ) +
         (Dkdv::kColSplit > 1 ? " cols/" + std::to_string(Dkdv::kColSplit) : "") +
         (dflt ? " (default)" : "");
}

// Every tile shape's shared memory fits this device's opt-in limit.
template <typename... Tiles>
bool fits() {
  const int optin = ac::tc_usable_smem();
  return ((Tiles::bytes <= optin) && ...);
}

// Runs the default forward then the backward variant Pair on a ragged problem (partial
// blocks and tiles), and checks the forward variant Fwd and the gradients against the truth.
template <typename T, typename Fwd, typename Pair>
bool check(std::mt19937& rng, bool causal) {
  if (!fits<Fwd, typename Pair::first_type, typename Pair::second_type>()) {
    std::printf("check %s D%-3d causal=%d %s / %s: skipped, more shared memory than this device has\n",
                type_name<T>(), Fwd::D, int(causal), fwd_name<T, Fwd>().c_str(), bwd_name<T, Pair>().c_str());
    return true;
  }
  Buffers<T> buf(Problem{1, 3, 333, Fwd::D, causal}, rng, true);
  const Truth truth = reference(buf);
  launch_fwd<T, Fwd>(buf.fwd);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> lse(truth.lse.size());
  CHECK_CUDA(cudaMemcpy(lse.data(), buf.dlse, lse.size() * sizeof(float), cudaMemcpyDeviceToHost));
  const double e_out = max_error(buf.download(buf.dout_fwd), truth.out), e_lse = max_error(lse, truth.lse);
  launch_bwd<T, typename Pair::first_type, typename Pair::second_type>(buf.bwd);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaDeviceSynchronize());
  const double e_dq = max_error(buf.download(buf.dgq), truth.dq), e_dk = max_error(buf.download(buf.dgk), truth.dk),
               e_dv = max_error(buf.download(buf.dgv), truth.dv);
  // About 7-9 times the errors a NumPy model of the kernels' rounding (P and dS rounded to
  // T, outputs stored as T) gives at this size: bf16 out 1.5e-3, fp16 1.6e-4; lse 1e-6.
  // Tight enough that an output 10 % off, or one key dropped from the lse, fails. fp32
  // (3xTF32) is held to fp32's tolerance of the tests (rtol 2e-5): TF32 alone misses it
  // by ~30x.
  const bool half = std::is_same_v<T, __half>, single = std::is_same_v<T, float>;
  const double tol_out = single ? 2e-5 : half ? 1.5e-3 : 1e-2, tol_grad = single ? 2e-5 : half ? 2.5e-3 : 1.5e-2;
  const bool ok = e_out < tol_out && e_lse < 1e-5 && e_dq < tol_grad && e_dk < tol_grad && e_dv < tol_grad;
  std::printf("check %s D%-3d causal=%d %s / %s: out %.1e lse %.1e dq %.1e dk %.1e dv %.1e %s\n", type_name<T>(), Fwd::D,
              int(causal), fwd_name<T, Fwd>().c_str(), bwd_name<T, Pair>().c_str(), e_out, e_lse, e_dq, e_dk, e_dv,
              ok ? "ok" : "FAILED");
  return ok;
}

template <typename T, int D>
bool run(std::mt19937& rng, bool quick) {
  using V = Variants<T, D>;
  bool ok = true;
  // Every forward variant with the default backward, then every backward variant.
  for (bool causal : {false, true}) {
    std::apply([&](auto... f) { ((ok &= check<T, decltype(f), std::tuple_element_t<0, typename V::Bwd>>(rng, causal)), ...); },
               typename V::Fwd{});
    std::apply([&](auto... b) { ((ok &= check<T, ac::DefaultFwdTiles<T, D>, decltype(b)>(rng, causal)), ...); },
               typename V::Bwd{});
  }
  if (!ok) return false;
  const std::vector<int> lengths = quick ? std::vector<int>{4096} : std::vector<int>{1024, 2048, 4096, 8192, 16384};
  for (bool causal : {false, true})
    for (int l : lengths) {
      // B·H·L = 4·16·4096 tokens, as issue 13's table: B4 H16 at L4096, B1 at L16384.
      const int h = 16, b = std::max(1, 4 * 4096 / l);
      Buffers<T> buf(Problem{b, h, l, D, causal}, rng, false);
      auto report = [&](const std::string& what, double ms, double flops) {
        std::printf("time  %s D%-3d causal=%d B%-2d H%d L%-5d %-44s %8.3f ms %7.1f TFLOP/s\n", type_name<T>(), D,
                    int(causal), b, h, l, what.c_str(), ms, flops / ms * 1e-9);
      };
      std::apply([&](auto... f) {
        ((fits<decltype(f)>() ? report(fwd_name<T, decltype(f)>(), time_ms([&] { launch_fwd<T, decltype(f)>(buf.fwd); }),
                                       buf.pr.fwd_flops())
                              : void()),
         ...);
      }, typename V::Fwd{});
      launch_fwd<T, ac::DefaultFwdTiles<T, D>>(buf.fwd);  // the backward's out and lse
      std::apply([&](auto... b) {
        ((fits<typename decltype(b)::first_type, typename decltype(b)::second_type>()
              ? report(bwd_name<T, decltype(b)>(),
                       time_ms([&] { launch_bwd<T, typename decltype(b)::first_type, typename decltype(b)::second_type>(buf.bwd); }),
                       2.5 * buf.pr.fwd_flops())
              : void()),
         ...);
      }, typename V::Bwd{});
    }
  return true;
}

// The mma.sync ceilings: every warp runs independent products on registers, m16n8k16 on T
// or (T float) m16n8k8 on TF32.
template <typename T>
__global__ void mma_peak_kernel(float* sink, int iters) {
  uint32_t a[4] = {threadIdx.x, threadIdx.x * 3u, threadIdx.x * 5u, threadIdx.x * 7u}, b[2] = {threadIdx.x, 1u};
  float d[8][4] = {};
  for (int it = 0; it < iters; ++it)
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      if constexpr (std::is_same_v<T, float>) pyattn::ptx::mma_1688_tf32(d[c], a, b);
      else pyattn::ptx::mma_16816<T>(d[c], a, b);
    }
  float acc = 0;
  for (auto& c : d)
    for (float x : c) acc += x;
  if (acc == 1.2345f) sink[0] = acc;  // keeps the products live
}

void ceilings() {
  int dev = 0;
  CHECK_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  harness::print_device();
  float* sink = nullptr;
  CHECK_CUDA(cudaMalloc(&sink, 4));
  const int iters = 4096, blocks = prop.multiProcessorCount * 8, threads = 256;
  const double ms = time_ms([&] { mma_peak_kernel<__nv_bfloat16><<<blocks, threads>>>(sink, iters); });
  const double flops = 2.0 * 16 * 8 * 16 * 8 * double(iters) * blocks * (threads / 32);
  std::printf("ceiling mma.sync bf16 m16n8k16 (registers only): %.1f TFLOP/s\n", flops / ms * 1e-9);
  const double tms = time_ms([&] { mma_peak_kernel<float><<<blocks, threads>>>(sink, iters); });
  std::printf("ceiling mma.sync tf32 m16n8k8 (registers only): %.1f TFLOP/s (3xTF32 fp32: a third)\n",
              flops / 2 / tms * 1e-9);
  const size_t bytes = size_t(1) << 30;
  void *src = nullptr, *dst = nullptr;
  CHECK_CUDA(cudaMalloc(&src, bytes));
  CHECK_CUDA(cudaMalloc(&dst, bytes));
  const double cms = time_ms([&] { CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); });
  std::printf("ceiling copy (read + write): %.2f TB/s\n", 2.0 * bytes / cms * 1e-9);
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(dst));
  CHECK_CUDA(cudaFree(sink));
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
  ok &= run<float, 64>(rng, quick);
  ok &= run<float, 128>(rng, quick);
  ok &= run<__nv_bfloat16, 256>(rng, quick);
  std::printf(ok ? "all checks passed\n" : "SOME CHECKS FAILED\n");
  return ok ? 0 : 1;
}
