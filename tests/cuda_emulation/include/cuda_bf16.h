#pragma once
// Stands in for the CUDA header of the same name in the emulated kernel builds (see ../emu.h).
#include "../emu.h"
