// Stands in for CUDA's <mma.h> under emulation: nvcuda::wmma comes from emulate.h.
#pragma once
