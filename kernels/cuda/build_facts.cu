// Build facts only a CUDA compile knows, reported by pyattn.build_info().
#include "pyattn/common.h"

#define PYATTN_STR_(...) #__VA_ARGS__
#define PYATTN_STR(...) PYATTN_STR_(__VA_ARGS__)

namespace pyattn {

const char* cuda_arch_list() {
#ifdef __CUDA_ARCH_LIST__
  return PYATTN_STR(__CUDA_ARCH_LIST__);  // e.g. "800,900", one per -gencode target
#else
  return "unknown";
#endif
}

}  // namespace pyattn
