//! MMIO register map of SMMUv3 page 0 and page 1.
