// kernels/cuda/attention_mma_bwd.cu (the mma.sync backward) on the emulated device of emulate.h.
#include "emulate.h"

#include "cuda/attention_mma_bwd.cu"
