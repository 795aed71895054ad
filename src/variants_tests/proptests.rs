//! Every ID-register value: the lifecycle never panics.

use super::*;

// --- Every ID register value ------------------------------------------------

/// `Smmu::new` + `enable` (+ a domain, when there is one to create) never
/// panic, whatever the ID registers say.
fn never_panics(idr0: u32, idr1: u32, idr3: u32, idr5: u32, iidr: u32, aidr: u32) -> String {
    let model = b()
        .id_register(0x00, idr0)
        .id_register(0x04, idr1)
        .id_register(0x0C, idr3)
        .id_register(0x14, idr5)
        .id_register(0x18, iidr)
        .id_register(0x1C, aidr)
        .build();
    let config = Config {
        timeout_ns: 1_000_000,
        // Keep host memory small: huge IDR1 queue sizes are clamped.
        ..Config::default()
    };
    // SAFETY: the model outlives the driver; nothing else drives it.
    let smmu = match unsafe { Smmu::<FakeHal>::new(model.base(), config) } {
        Ok(s) => s,
        Err(e) => return format!("new: {e:?}"),
    };
    if let Err(e) = smmu.enable() {
        return format!("enable: {e:?}");
    }
    let r = match stage2_for(&smmu) {
        Some(cfg) => smmu.create_domain(DomainOptions::new(cfg)).map(|_| ()),
        None => Ok(()),
    };
    format!("{r:?}")
}

/// The whole lifecycle, with every check `lifecycle` makes, on arbitrary
/// ID registers: it completes or stops with an error (any error a variant
/// may meet is typed; the variant tests above pin which).
fn lifecycle_on(idr: [u32; 6]) -> Run {
    let model = b()
        .id_register(0x00, idr[0])
        .id_register(0x04, idr[1])
        .id_register(0x0C, idr[2])
        .id_register(0x14, idr[3])
        .id_register(0x18, idr[4])
        .id_register(0x1C, idr[5])
        .build();
    lifecycle(&model, Opts::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_id_registers(idr0: u32, idr1: u32, idr3: u32, idr5: u32, iidr: u32, aidr: u32) {
        let _ = never_panics(idr0, idr1, idr3, idr5, iidr, aidr);
        let _ = lifecycle_on([idr0, idr1, idr3, idr5, iidr, aidr]);
    }

    /// Random ID registers that probe (a stage, AArch64 tables, not
    /// big-endian only, no preset or relative bases, OAS 48 or 52 so the
    /// host heap is reachable, at least one granule; any stall model):
    /// the lifecycle completes.
    #[test]
    fn drivable_id_registers_complete(idr0: u32, idr1: u32, idr3: u32, idr5: u32, iidr: u32, aidr in 0u32..4) {
        let mut idr0 = idr0 | 1 << 3; // TTF: AArch64 (+ AArch32)
        if idr0 & 3 == 0 { idr0 |= 1; }
        if (idr0 >> 21) & 1 == 1 { idr0 &= !(3 << 21); } // TTENDIAN 0 or 2
        let idr1 = idr1 & !(7 << 28);
        let mut idr5 = (idr5 & !7) | 5 | (idr5 & 1) << 1;
        if idr5 & 0x70 == 0 { idr5 |= 1 << 4; }
        let run = lifecycle_on([idr0, idr1, idr3, idr5, iidr, aidr]);
        prop_assert!(run.failed.is_none(), "{:x?}: {:?}", [idr0, idr1, idr3, idr5, iidr, aidr], run.failed);
    }

    /// Around the ID registers QEMU reports: one field at a time.
    #[test]
    fn one_field_changed(reg in 0usize..4, shift in 0u32..32, bits in 1u32..6, v: u32) {
        let mut regs = [0x0D44_101Bu32, 0x0273_0010, 0x0000_1404, 0x0000_0075];
        let bits = bits.min(32 - shift);
        let mask = (((1u64 << bits) - 1) as u32) << shift;
        regs[reg] = (regs[reg] & !mask) | ((v << shift) & mask);
        let _ = never_panics(regs[0], regs[1], regs[2], regs[3], 0, 1);
    }
}
