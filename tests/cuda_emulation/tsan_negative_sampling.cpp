// The negative-sampling kernels (kernels/cuda/negative_sampling.cu) on the emulated device
// of emulate.h, built with ThreadSanitizer (tests/test_cuda_emulated.py builds and runs it).
// Each CUDA thread is a std::thread there, so a missing __syncwarp between lanes that
// share a warp's shared-memory slice is a data race TSan reports on every run, where the
// emulated tests only see a wrong result if the threads happen to interleave badly.
//
//   tsan_negative_sampling           every update mode and sgns_loss; exit 0 when clean
//   tsan_negative_sampling --planted a kernel with a race planted in it, which TSan must
//                                    report (else a clean run above would prove nothing)
//
// The update's streams (warps) each work on their own part of the vocabulary, so the
// Hogwild updates of rows that streams share, which race by design, do not occur here:
// any report is a race inside a warp or between warps' shared-memory slices.
#include "emulate.h"

#include "cuda/negative_sampling.cu"

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

using pyattn::DType;

constexpr int64_t kStreams = 4;  // one block of 4 warps (negative_sampling.cu's kWarpsPerBlock)
constexpr int64_t kWordsPerStream = 12;
constexpr int64_t kCentersPerStream = 5;
constexpr int64_t kSlots = 5;

// mode 0: skip-gram pairs, 1: CBOW, 2: skip-gram window batch. Contexts repeat within a
// window and negatives within an example, and one slot in five is empty.
template <class T>
void update(int mode, int64_t dim, int64_t k, std::mt19937_64& rng) {
  const int64_t vocab = kWordsPerStream * kStreams, n = kCentersPerStream * kStreams;
  std::normal_distribution<double> normal(0.0, 0.4);
  std::vector<T> w_in(vocab * dim), w_out(vocab * dim);
  for (T& x : w_in) x = T(normal(rng));
  for (T& x : w_out) x = T(normal(rng));
  const bool per_center = mode != 0;  // negatives [n, k]; skip-gram pairs: [n, slots, k]
  std::vector<int64_t> centers(n), contexts(n * kSlots), negatives(per_center ? n * k : n * kSlots * k);
  auto word = [&](int64_t i, int64_t of) { return i / kCentersPerStream * kWordsPerStream + int64_t(rng() % of); };
  for (int64_t i = 0; i < n; ++i) {
    centers[i] = word(i, kWordsPerStream);
    for (int64_t s = 0; s < kSlots; ++s) contexts[i * kSlots + s] = rng() % 5 == 0 ? -1 : word(i, kWordsPerStream / 2);
  }
  const int64_t per_example = int64_t(negatives.size()) / n;
  for (int64_t e = 0; e < int64_t(negatives.size()); ++e) negatives[e] = word(e / per_example, kWordsPerStream / 3);
  double loss = 0.0;
  int64_t bad = -1;
  pyattn::NegSamplingUpdateParams p{};
  p.w_in = w_in.data();
  p.w_in_stride = dim;
  p.w_out = w_out.data();
  p.w_out_stride = dim;
  p.dtype = sizeof(T) == 8 ? DType::f64 : DType::f32;
  p.vocab = vocab;
  p.dim = dim;
  p.centers = centers.data();
  p.contexts = contexts.data();
  p.n = n;
  p.window_slots = kSlots;
  p.negatives = negatives.data();
  p.k = k;
  p.lr = 0.1;
  p.cbow = mode == 1;
  p.window_batch = mode == 2;
  p.compute_loss = true;
  p.loss = &loss;
  p.bad_index = &bad;
  p.max_streams = kStreams;
  pyattn::negative_sampling_update_cuda(p, nullptr);
  if (bad != -1 || !std::isfinite(loss)) {
    std::fprintf(stderr, "update mode %d dim %ld k %ld: bad id %ld, loss %g\n", mode, long(dim), long(k), long(bad),
                 loss);
    std::exit(1);
  }
}

template <class T>
void sgns_loss(int64_t dim, int64_t k, std::mt19937_64& rng) {
  const int64_t vocab = 30, b = 4 * kStreams + 3;  // a last block with 3 of its 4 warps busy
  std::normal_distribution<double> normal(0.0, 0.5);
  std::vector<T> w_in(vocab * dim), w_out(vocab * dim), loss(b), dloss(b, T(1)), d_h(b * dim), d_u(b * (1 + k) * dim);
  for (T& x : w_in) x = T(normal(rng));
  for (T& x : w_out) x = T(normal(rng));
  std::vector<int64_t> centers(b), contexts(b), negatives(b * k);
  for (int64_t& id : centers) id = int64_t(rng() % vocab);
  for (int64_t& id : contexts) id = int64_t(rng() % vocab);
  for (int64_t& id : negatives) id = int64_t(rng() % vocab);
  int64_t bad = pyattn::kSgnsLossNoBadId;
  pyattn::SgnsLossParams p{};
  p.w_in = w_in.data();
  p.w_in_stride = dim;
  p.w_out = w_out.data();
  p.w_out_stride = dim;
  p.dtype = sizeof(T) == 8 ? DType::f64 : DType::f32;
  p.vocab = vocab;
  p.dim = dim;
  p.b = b;
  p.k = k;
  p.centers = centers.data();
  p.contexts = contexts.data();
  p.negatives = negatives.data();
  p.loss = loss.data();
  p.dloss = dloss.data();
  p.d_h = d_h.data();
  p.d_u = d_u.data();
  p.bad_index = &bad;
  pyattn::sgns_loss_cuda(p, nullptr);
  if (bad != pyattn::kSgnsLossNoBadId) {
    std::fprintf(stderr, "sgns_loss dim %ld k %ld: bad id %ld\n", long(dim), long(k), long(bad));
    std::exit(1);
  }
}

// Lane 0 writes the warp's shared memory and lane 1 reads it with no __syncwarp between.
__global__ void planted_race(int* out) {
  PYATTN_DYNAMIC_SMEM(smem_raw, 16);
  int* shared = reinterpret_cast<int*>(smem_raw);
  if (threadIdx.x == 0) shared[0] = 42;
  if (threadIdx.x == 1) out[0] = shared[0];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--planted") == 0) {
    int out = 0;
    PYATTN_LAUNCH(1, 32, 64, nullptr, planted_race)(&out);
    std::printf("planted race ran (TSan should have reported it)\n");
    return 0;
  }
  emu::g_sm_count = 1;  // all kStreams warps in one block
  std::mt19937_64 rng(20261206);
  // dim 45: a last pass over the lanes with 13 of 32 busy; k 3 and 10: one group of 8
  // targets, and two with a partial second.
  for (int mode = 0; mode < 3; ++mode)
    for (int64_t k : {3, 10}) {
      update<float>(mode, 45, k, rng);
      update<double>(mode, 45, k, rng);
    }
  sgns_loss<float>(45, 3, rng);
  sgns_loss<double>(70, 10, rng);
  std::printf("all kernels ran\n");
  return 0;
}
