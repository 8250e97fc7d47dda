// kernels/cuda/attention.cu (version 1) on the emulated device of emulate.h.
#include "emulate.h"

#include "cuda/attention.cu"
