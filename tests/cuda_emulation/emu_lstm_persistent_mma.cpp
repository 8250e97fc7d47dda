// kernels/cuda/lstm_persistent_mma.cu on the emulated device of emulate.h (its PTX
// instructions through ptx_emulated.h).
#include "emulate.h"

#include "cuda/lstm_persistent_mma.cu"
