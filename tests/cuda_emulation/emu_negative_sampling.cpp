// kernels/cuda/negative_sampling.cu on the emulated device of emulate.h.
#include "emulate.h"

#include "cuda/negative_sampling.cu"
