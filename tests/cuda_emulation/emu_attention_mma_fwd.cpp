// kernels/cuda/attention_mma_fwd.cu (the mma.sync forward) on the emulated device of emulate.h.
#include "emulate.h"

#include "cuda/attention_mma_fwd.cu"
