//! What the SMMU can see on the register model, checked against the model after
//! every step.

use super::*;

// ---------------------------------------------------------------------------
// What the SMMU can see on the register model: the stream table (L1
// descriptors, STEs), the CDs and L1CDs a stage-1 STE reaches (PAs only:
// a nested STE's CD pointer is a guest IPA), and the commands.
// ---------------------------------------------------------------------------

/// Page-0 register offsets the observer reads.
pub(super) const CR2: usize = 0x2C;
const STRTAB_BASE: usize = 0x80;
const STRTAB_BASE_CFG: usize = 0x88;

fn rd64(addr: u64, i: u64) -> u64 {
    // SAFETY: HostHal memory is identity-mapped; callers only read tables
    // the driver allocated and points the model at (STRTAB_BASE, L2Ptr,
    // S1ContextPtr, L1CD.L2Ptr), within the sizes their fields give.
    unsafe { ((addr + 8 * i) as usize as *const u64).read_volatile() }
}

pub(super) fn reg32(base: usize, off: usize) -> u32 {
    // SAFETY: `base` is a live model register block of MMIO_SIZE bytes.
    unsafe { ((base + off) as *const u32).read_volatile() }
}

/// What one observation needs: the register block and the ID registers.
#[derive(Clone, Copy)]
pub(super) struct Observer {
    pub(super) base: usize,
    pub(super) idr: Idr,
}

impl Observer {
    pub(super) fn e2h(&self) -> bool {
        reg32(self.base, CR2) & 1 == 1
    }

    /// The STE of `sid` (None: not reachable), checking the L1STD on the way.
    pub(super) fn ste(&self, sid: u32, out: &mut Vec<String>) -> Option<[u64; 8]> {
        let base = (u64::from(reg32(self.base, STRTAB_BASE + 4)) << 32
            | u64::from(reg32(self.base, STRTAB_BASE)))
            & 0x000F_FFFF_FFFF_FFC0;
        let cfg = reg32(self.base, STRTAB_BASE_CFG);
        let (log2size, split, two) = (cfg & 0x3F, (cfg >> 6) & 0x1F, (cfg >> 16) & 3 == 1);
        if base == 0 || u64::from(sid) >> log2size != 0 {
            return None;
        }
        let addr = if two {
            let desc = rd64(base, u64::from(sid >> split));
            if let Some(e) = l1std_illegal(desc, split, &self.idr) {
                out.push(format!("L1STD of SID {sid:#x} = {desc:#x}: {e}"));
            }
            let span = bits(desc, 0, 5) as u32;
            let index = sid & ((1 << split) - 1);
            if span == 0 || span > 12 || index >> (span - 1) != 0 {
                return None;
            }
            (desc & 0x000F_FFFF_FFFF_FFC0) + u64::from(index) * 64
        } else {
            base + u64::from(sid) * 64
        };
        Some(core::array::from_fn(|i| rd64(addr, i as u64)))
    }

    /// Checks the STE of `sid` and, for a stage-1-only STE, every valid CD
    /// (and L1CD) it reaches, and that CD 0 is valid.
    pub(super) fn check_sid(&self, sid: u32, when: &str, out: &mut Vec<String>) {
        let Some(ste) = self.ste(sid, out) else {
            return;
        };
        if let Some(e) = ste_illegal(&ste, &self.idr) {
            out.push(format!("{when}: STE of SID {sid:#x} {ste:x?}: {e}"));
            return;
        }
        if bits(ste[0], 0, 4) != 0b1011 {
            return; // not V + stage-1-only: a nested CD pointer is an IPA
        }
        let ptr = ste[0] & 0x000F_FFFF_FFFF_FFC0;
        let cdmax = bits(ste[0], 59, 5) as u32;
        let fmt = bits(ste[0], 4, 2);
        let cdmax = if self.idr.ssidsize == 0 { 0 } else { cdmax };
        let mut cds: Vec<(u32, [u64; 8])> = Vec::new();
        if cdmax == 0 || fmt == 0 || fmt == 3 {
            for ssid in 0..(1u32 << cdmax) {
                cds.push((
                    ssid,
                    core::array::from_fn(|i| rd64(ptr + u64::from(ssid) * 64, i as u64)),
                ));
            }
        } else {
            let leaf_bits = if fmt == 1 { 6 } else { 10 };
            let l1n = if cdmax <= leaf_bits {
                1
            } else {
                1u32 << (cdmax - leaf_bits)
            };
            for l1 in 0..l1n {
                let desc = rd64(ptr, u64::from(l1));
                if let Some(e) = l1cd_illegal(desc, false, &self.idr) {
                    out.push(format!(
                        "{when}: L1CD {l1} of SID {sid:#x} = {desc:#x}: {e}"
                    ));
                }
                if desc & 1 == 0 {
                    continue;
                }
                let leaf = desc & 0x000F_FFFF_FFFF_F000;
                for j in 0..(1u32 << leaf_bits.min(cdmax)) {
                    let cd = core::array::from_fn(|i| rd64(leaf + u64::from(j) * 64, i as u64));
                    cds.push(((l1 << leaf_bits) | j, cd));
                }
            }
        }
        let e2h = self.e2h();
        for (ssid, cd) in &cds {
            if *ssid == 0 && bits(cd[0], 31, 1) == 0 {
                out.push(format!(
                    "{when}: SID {sid:#x}: CD 0 of a stage-1 STE is not valid (5.4 V)"
                ));
            }
            if let Some(e) = cd_illegal(cd, &ste, e2h, &self.idr) {
                out.push(format!("{when}: CD {ssid} of SID {sid:#x} {cd:x?}: {e}"));
            }
        }
    }
}

/// Installs an observer on `model`: every command it consumes is checked,
/// and at every CFGI and CMD_SYNC so are the STEs of `sids` (the states
/// each step of an update leaves). Returns the list of violations.
pub(super) fn observe(
    model: &SmmuModel,
    idr: Idr,
    sids: &'static [u32],
) -> Arc<Mutex<Vec<String>>> {
    let found = Arc::new(Mutex::new(Vec::new()));
    let obs = Observer {
        base: model.base().as_ptr() as usize,
        idr,
    };
    let f = Arc::clone(&found);
    model.fault_commands(move |cmd| {
        let mut out = Vec::new();
        if let Some(e) = command_illegal(*cmd, &obs.idr) {
            out.push(format!("command {cmd:x?}: {e}"));
        }
        let op = cmd[0] & 0xFF;
        if (0x03..=0x06).contains(&op) || op == 0x46 {
            for &sid in sids {
                obs.check_sid(sid, &format!("at command {op:#x}"), &mut out);
            }
        }
        f.lock().unwrap().extend(out);
        None
    });
    found
}
