// Every pyattn op schema, in one place, and the pybind11 module (build facts, ISA control).
// Implementations are registered per device next to each op's glue (csrc/<op>.cpp);
// fake (meta) implementations live in pyattn/_ops.py.
#include <torch/extension.h>
#include <torch/library.h>
#include <torch/version.h>

#include <string>

#include "pyattn/common.h"

#ifdef PYATTN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

TORCH_LIBRARY(pyattn, m) {
  // y = softmax(scale * x + mask) over the last dim; mask: bool (True = masked out) or additive.
  m.def("scaled_masked_softmax_fwd(Tensor x, Tensor? mask, float scale, bool causal) -> Tensor");
  // dx = scale * y * (dy - sum(dy * y)), from the forward's output y.
  m.def("scaled_masked_softmax_bwd(Tensor y, Tensor dy, float scale) -> Tensor");

  // LSTM, torch's gate order (i, f, g, o). See csrc/lstm.cpp for shapes. One step:
  // h', c' = cell(x, h, c); act holds the activated gates, saved for backward.
  m.def("lstm_cell_fwd(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh)"
        " -> (Tensor h_new, Tensor c_new, Tensor act)");
  // Gradients of one step from dh' and dc' (None = 0); db is the gradient of b_ih and of
  // b_hh alike (empty when has_bias is false).
  m.def("lstm_cell_bwd(Tensor? dh, Tensor? dc, Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor act,"
        " Tensor c_new, bool has_bias) -> (Tensor dx, Tensor dh_prev, Tensor dc_prev, Tensor dw_ih, Tensor dw_hh,"
        " Tensor db)");
  // One layer, one direction, every step in one call. x: [T, N, C], or packed
  // [sum(batch_sizes), C] with batch_sizes (int64, CPU). act, c_all, h_pre (o*tanh(c),
  // only with w_hr; else empty) are saved for lstm_seq_bwd.
  m.def("lstm_seq_fwd(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh,"
        " Tensor? w_hr, Tensor? batch_sizes, bool reverse) -> (Tensor y, Tensor h_n, Tensor c_n, Tensor act,"
        " Tensor c_all, Tensor h_pre)");
  // Backward through time; dy, dh_n, dc_n may be None (= 0). db and dw_hr are empty when
  // there is no bias / projection.
  m.def("lstm_seq_bwd(Tensor? dy, Tensor? dh_n, Tensor? dc_n, Tensor x, Tensor h0, Tensor c0, Tensor w_ih,"
        " Tensor w_hh, Tensor? w_hr, Tensor y, Tensor act, Tensor c_all, Tensor h_pre, Tensor? batch_sizes,"
        " bool reverse, bool has_bias) -> (Tensor dx, Tensor dh0, Tensor dc0, Tensor dw_ih, Tensor dw_hh, Tensor db,"
        " Tensor dw_hr)");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict d;
#ifdef PYATTN_WITH_CUDA
  d["cuda"] = true;
  d["cuda_runtime"] = CUDART_VERSION;
  d["cuda_archs"] = std::string(pyattn::cuda_arch_list());
#else
  d["cuda"] = false;
  d["cuda_runtime"] = pybind11::none();
  d["cuda_archs"] = std::string();
#endif
  d["cpu_isa"] = pyattn::cpu_isa_name(pyattn::cpu_isa());
  d["cpu_isa_best"] = pyattn::cpu_isa_name(pyattn::cpu_isa_best());
  d["torch_built_with"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                          std::to_string(TORCH_VERSION_PATCH);
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
#ifdef PYATTN_DEBUG
  d["debug"] = true;
#else
  d["debug"] = false;
#endif
  return d;
}

void set_cpu_isa(const std::string& name) {
  try {
    pyattn::set_cpu_isa(pyattn::parse_cpu_isa(name.c_str()));
  } catch (const std::invalid_argument& e) {
    throw pybind11::value_error(e.what());
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pyattn's compiled kernels; the ops are torch.ops.pyattn.*";
  m.def("build_info", &build_info, "How this extension was built and which CPU code path runs");
  m.def("set_cpu_isa", &set_cpu_isa, pybind11::arg("name"),
        "Use a lower CPU instruction set: 'generic', 'avx2', 'avx512' or 'avx512_bf16'");
}
