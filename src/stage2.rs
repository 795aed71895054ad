//! Stage-2 translation tables shared in format with the CPU (VTCR_EL2).
