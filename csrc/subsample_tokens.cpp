// torch glue for subsample_tokens_ (pyattn/subsample_tokens.h): argument checks, the
// params, the CPU registration. The CUDA trainer subsamples with torch ops on the GPU,
// so the op has no CUDA kernel.
#include <torch/library.h>

#include "checks.h"
#include "pyattn/subsample_tokens.h"

namespace pyattn {
namespace {

constexpr const char* kOp = "subsample_tokens_";

// A 1-D contiguous CPU tensor of `dtype`; `layout` names its dim, e.g. "(tokens,)".
void check_vector(const at::Tensor& t, at::ScalarType dtype, const char* what, const char* layout = "(tokens,)") {
  check_dims(t, 1, kOp, what, layout);
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": ", what, " has dtype ", t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.is_cpu(), kOp, ": ", what, " is on ", t.device(), ", expected the CPU");
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", what, " must be contiguous");
}

at::Tensor subsample_tokens(const at::Tensor& tokens, const at::Tensor& sentence, const at::Tensor& keep,
                            int64_t window, int64_t seed, at::Tensor& kept_tokens, at::Tensor& kept_sentence,
                            at::Tensor& radius) {
  check_vector(tokens, at::kLong, "tokens");
  check_vector(sentence, at::kLong, "sentence");
  check_vector(keep, at::kDouble, "keep", "(vocab,)");
  TORCH_CHECK(sentence.numel() == tokens.numel(), kOp, ": sentence has ", sentence.numel(),
              " entries, expected one per token (", tokens.numel(), ")");
  TORCH_CHECK(window >= 1, kOp, ": window is ", window, ", expected >= 1");
  const int64_t n = tokens.numel();
  for (const auto& [t, name] : {std::pair{&kept_tokens, "kept_tokens"}, std::pair{&kept_sentence, "kept_sentence"},
                                std::pair{&radius, "radius"}}) {
    check_vector(*t, at::kLong, name);
    TORCH_CHECK(t->numel() >= n, kOp, ": ", name, " has ", t->numel(), " entries, expected at least one per token (",
                n, ")");
  }
  int64_t bad = -1;
  SubsampleTokensParams p{};
  p.tokens = tokens.data_ptr<int64_t>();
  p.sentence = sentence.data_ptr<int64_t>();
  p.keep = keep.data_ptr<double>();
  p.n = n;
  p.vocab = keep.numel();
  p.window = window;
  p.seed = uint64_t(seed);
  p.kept_tokens = kept_tokens.data_ptr<int64_t>();
  p.kept_sentence = kept_sentence.data_ptr<int64_t>();
  p.radius = radius.data_ptr<int64_t>();
  p.bad_position = &bad;
  const int64_t kept = subsample_tokens_cpu(p);
  TORCH_CHECK(bad < 0, kOp, ": tokens holds id ", bad < 0 ? 0 : p.tokens[bad], " at ", bad, ", outside [0, ", p.vocab,
              ") (keep has one entry per id)");
  return at::scalar_tensor(kept, tokens.options());
}

}  // namespace

TORCH_LIBRARY_IMPL(pyattn, CPU, m) { m.impl("subsample_tokens_", &subsample_tokens); }

}  // namespace pyattn
