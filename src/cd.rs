//! Context descriptors (64 bytes, eight little-endian dwords): the stage-1
//! translation context of a stream.
//!
//! This driver encodes one CD per stream (STE.S1Fmt = linear, S1CDMax = 0)
//! with only TTB0. The SMMU may read a CD's dwords in any order and cache
//! it partially, like an STE, and a CD can be live (V = 1 behind a live
//! stage-1 STE) when it changes: so CDs are updated through the same
//! planner as STEs, [`plan_update`] (with `Sync` = CFGI_CD + CMD_SYNC).
//! Changing only the ASID, only TTB0 or only MAIR is one 64-bit store and
//! one invalidation (hitless); changing several used dwords at once goes
//! through V = 0.

use tock_registers::LocalRegisterCopy;
use tock_registers::register_bitfields;

use crate::entry_plan::{self, Dwords, ENTRY_DWORDS, EntryKind, UpdatePlan};
use crate::error::{Error, Field, Invalid, Result, Unsupported};

register_bitfields! [u64,
    /// CD dword 0: translation control, validity, ASID.
    pub CD_0 [
        T0SZ OFFSET(0) NUMBITS(6) [],
        /// TTB0 granule: 0 = 4K, 1 = 64K, 2 = 16K.
        TG0 OFFSET(6) NUMBITS(2) [],
        IR0 OFFSET(8) NUMBITS(2) [],
        OR0 OFFSET(10) NUMBITS(2) [],
        SH0 OFFSET(12) NUMBITS(2) [],
        /// Walks through TTB0 disabled.
        EPD0 OFFSET(14) NUMBITS(1) [],
        /// Big-endian tables. Always 0.
        ENDI OFFSET(15) NUMBITS(1) [],
        T1SZ OFFSET(16) NUMBITS(6) [],
        TG1 OFFSET(22) NUMBITS(2) [],
        IR1 OFFSET(24) NUMBITS(2) [],
        OR1 OFFSET(26) NUMBITS(2) [],
        SH1 OFFSET(28) NUMBITS(2) [],
        /// Walks through TTB1 disabled. Always 1: only TTB0 is used (QEMU
        /// also needs it to accept the CD).
        EPD1 OFFSET(30) NUMBITS(1) [],
        V OFFSET(31) NUMBITS(1) [],
        /// Intermediate (output) physical address size, encoded as IDR5.OAS.
        IPS OFFSET(32) NUMBITS(3) [],
        /// Access flag fault disable.
        AFFD OFFSET(35) NUMBITS(1) [],
        WXN OFFSET(36) NUMBITS(1) [],
        UWXN OFFSET(37) NUMBITS(1) [],
        /// Top byte ignore for TTB0/TTB1.
        TBI OFFSET(38) NUMBITS(2) [],
        PAN OFFSET(40) NUMBITS(1) [],
        /// AArch64 tables. Always 1.
        AA64 OFFSET(41) NUMBITS(1) [],
        HD OFFSET(42) NUMBITS(1) [],
        HA OFFSET(43) NUMBITS(1) [],
        /// Stall faulting transactions. Always 0.
        S OFFSET(44) NUMBITS(1) [],
        /// Record faults as events.
        R OFFSET(45) NUMBITS(1) [],
        /// Abort (rather than RAZ/WI) terminated transactions. Always 1.
        A OFFSET(46) NUMBITS(1) [],
        /// ASID set: 1 = non-shared (not hit by broadcast TLB maintenance).
        ASET OFFSET(47) NUMBITS(1) [],
        ASID OFFSET(48) NUMBITS(16) []
    ],
    /// CD dword 1 (and dword 2 for TTB1): table base.
    pub CD_1 [
        /// TTB0\[51:4\].
        TTB0 OFFSET(4) NUMBITS(48) []
    ],
    /// CD dword 2: TTB1 (unused by this driver: EPD1 = 1).
    pub CD_2 [
        /// TTB1\[55:4\].
        TTB1 OFFSET(4) NUMBITS(52) []
    ],
    /// CD dword 3: memory attribute indirection.
    pub CD_3 [
        /// MAIR0 \[31:0\] and MAIR1 \[63:32\]: the whole MAIR_ELx value.
        MAIR OFFSET(0) NUMBITS(64) []
    ]
];

/// Low bits the TTB0 field does not hold.
const TTB_SHIFT: u32 = 4;
/// Physical (or intermediate physical) addresses are below 2^52.
const PA_LIMIT: u64 = 1 << 52;
/// Largest IPS this driver programs: 48 bits. 52 bits (6) is valid in the
/// architecture but crashes QEMU's model; 7 is reserved.
const MAX_IPS: u8 = 5;

/// Stage-1 translation context of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage1Cd {
    /// ASID (8 or 16 bits, see `Features::asid_bits`).
    pub asid: u16,
    /// Address of the stage-1 root table (an IPA when nested), 16-byte
    /// aligned, below 2^52.
    pub ttb0: u64,
    /// T0SZ: the VA space is 2^(64 - t0sz) bytes.
    pub t0sz: u8,
    /// TG0: 0 = 4K, 1 = 64K, 2 = 16K.
    pub tg0: u8,
    /// IPS: output size encoded as IDR5.OAS, 0..=5 (32..=48 bits).
    pub ips: u8,
    /// Inner cacheability of walks: 0 NC, 1 WB-WA, 2 WT, 3 WB.
    pub ir0: u8,
    /// Outer cacheability of walks.
    pub or0: u8,
    /// Shareability of walks: 0 NSH, 2 OSH, 3 ISH.
    pub sh0: u8,
    /// MAIR value indexed by the page tables' AttrIndx.
    pub mair: u64,
    /// R: record faults as events.
    pub record_faults: bool,
    /// AFFD: no fault on AF = 0.
    pub affd: bool,
}

/// A context descriptor: eight dwords, in the order they sit in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cd(pub [u64; 8]);

fn invalid(field: Field, value: u64) -> Error {
    Error::Invalid(Invalid::Field { field, value })
}

fn check_2bit(v: u8, what: Field) -> Result<u64> {
    if v > 3 {
        Err(invalid(what, u64::from(v)))
    } else {
        Ok(u64::from(v))
    }
}

impl Cd {
    /// All zeros: V = 0.
    pub const fn invalid() -> Cd {
        Cd([0; 8])
    }

    /// Encodes a valid CD: AArch64, little-endian, TTB0 only (EPD1 = 1),
    /// no stalls (S = 0), abort on termination (A = 1), no hardware
    /// access/dirty updates, no TBI/PAN/WXN, and ASET = 1 (non-shared ASID
    /// set: the driver invalidates with its own TLBI_NH_* commands, and the
    /// SMMU's ASIDs are independent of the CPUs' so broadcast TLB
    /// maintenance must not match them).
    ///
    /// Errors: `ttb0` not 16-byte aligned ([`Error::Misaligned`]) or beyond
    /// 52 bits, `t0sz` above 63, reserved `tg0`/`sh0`, cacheability above 3
    /// ([`Error::Invalid`] with [`Invalid::Field`]); `ips` above 5
    /// ([`Unsupported::AddressSize`]).
    pub fn new(c: &Stage1Cd) -> Result<Cd> {
        if c.ttb0 & ((1 << TTB_SHIFT) - 1) != 0 {
            return Err(Error::Misaligned {
                addr: c.ttb0,
                align: 1 << TTB_SHIFT,
            });
        }
        if c.ttb0 >= PA_LIMIT {
            return Err(invalid(Field::Ttb0, c.ttb0));
        }
        if c.t0sz > 63 {
            return Err(invalid(Field::T0sz, u64::from(c.t0sz)));
        }
        if c.tg0 > 2 {
            return Err(invalid(Field::Tg0, u64::from(c.tg0)));
        }
        if c.sh0 == 1 {
            return Err(invalid(Field::Sh0, u64::from(c.sh0)));
        }
        if c.ips > MAX_IPS {
            return Err(Error::Unsupported(Unsupported::AddressSize));
        }
        let d0 = CD_0::T0SZ.val(u64::from(c.t0sz))
            + CD_0::TG0.val(u64::from(c.tg0))
            + CD_0::IR0.val(check_2bit(c.ir0, Field::Ir0)?)
            + CD_0::OR0.val(check_2bit(c.or0, Field::Or0)?)
            + CD_0::SH0.val(check_2bit(c.sh0, Field::Sh0)?)
            + CD_0::EPD0.val(0)
            + CD_0::ENDI.val(0)
            + CD_0::EPD1.val(1)
            + CD_0::V.val(1)
            + CD_0::IPS.val(u64::from(c.ips))
            + CD_0::AFFD.val(u64::from(c.affd))
            + CD_0::AA64.val(1)
            + CD_0::S.val(0)
            + CD_0::R.val(u64::from(c.record_faults))
            + CD_0::A.val(1)
            + CD_0::ASET.val(1)
            + CD_0::ASID.val(u64::from(c.asid));
        let d1 = CD_1::TTB0.val(c.ttb0 >> TTB_SHIFT);
        let d3 = CD_3::MAIR.val(c.mair);
        Ok(Cd([d0.value, d1.value, 0, d3.value, 0, 0, 0, 0]))
    }

    fn d0(&self) -> LocalRegisterCopy<u64, CD_0::Register> {
        LocalRegisterCopy::new(self.0[0])
    }

    /// CD.V.
    pub fn is_valid(&self) -> bool {
        self.d0().is_set(CD_0::V)
    }

    /// CD.ASID.
    pub fn asid(&self) -> u16 {
        self.d0().read(CD_0::ASID) as u16
    }

    /// CD.TTB0 as an address.
    pub fn ttb0(&self) -> u64 {
        LocalRegisterCopy::<u64, CD_1::Register>::new(self.0[1]).read(CD_1::TTB0) << TTB_SHIFT
    }

    /// CD.MAIR (dword 3).
    pub fn mair(&self) -> u64 {
        LocalRegisterCopy::<u64, CD_3::Register>::new(self.0[3]).read(CD_3::MAIR)
    }
}

/// The bits a field occupies in its dword.
fn bits<R: tock_registers::RegisterLongName>(f: tock_registers::fields::Field<u64, R>) -> u64 {
    f.mask << f.shift
}

/// The bits of a CD the SMMU may read under the configuration it selects
/// (IHI 0070 §5.4), counted conservatively: V alone when V = 0; otherwise
/// every bit of every dword (TCR fields, ASID, TTB0, MAIR, AMAIR, MPAM,
/// permission indirection, IMPLEMENTATION DEFINED bits), except that with
/// EPD1 = 1 (walks through TTB1 disabled: every TTB1 access faults) the
/// TTB1 walk parameters T1SZ, TG1, IR1, OR1, SH1 and TTB1 itself are not
/// read. EPD0 = 1 is not used to drop TTB0's fields (Linux does; this
/// driver never sets EPD0, so nothing is lost by counting them).
fn cd_used(e: &Dwords) -> Dwords {
    let mut u = [0u64; ENTRY_DWORDS];
    u[0] = bits(CD_0::V);
    if e[0] & bits(CD_0::V) == 0 {
        return u;
    }
    u = [!0; ENTRY_DWORDS];
    if e[0] & bits(CD_0::EPD1) != 0 {
        u[0] &= !(bits(CD_0::T1SZ)
            | bits(CD_0::TG1)
            | bits(CD_0::IR1)
            | bits(CD_0::OR1)
            | bits(CD_0::SH1));
        u[2] &= !bits(CD_2::TTB1);
    }
    u
}

/// How the SMMU reads CDs, for the generic entry planner: [`Cd::used_bits`]
/// and V = 0 (dword 0 all zeros) as the break-before-make state.
pub const CD_KIND: EntryKind = EntryKind {
    used: cd_used,
    broken_dword0: 0,
};

impl Cd {
    /// The bits the SMMU may read under this CD's configuration, per dword
    /// (1 = used): see `cd_used`'s rules (IHI 0070 §5.4, conservative).
    pub fn used_bits(&self) -> [u64; 8] {
        cd_used(&self.0)
    }
}

/// Plans the replacement of `current` by `target`, a CD the SMMU may be
/// using, so that it never combines bits of the two (IHI 0070 §3.21.3):
/// [`entry_plan::plan`] with [`CD_KIND`]; `Sync` means CFGI_CD (leaf) for
/// every StreamID whose STE points at the CD, then CMD_SYNC.
///
/// Errors: [`Error::PlanTooLong`] (never for 8-dword entries).
pub fn plan_update(current: &Cd, target: &Cd) -> Result<UpdatePlan> {
    entry_plan::plan(&CD_KIND, &current.0, &target.0)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::entry_plan::UpdateStep::{Publish, Sync, Write};
    use crate::entry_plan::model::{Outcome, replay};
    use proptest::prelude::*;
    use std::vec::Vec;

    fn live(e: &Dwords) -> bool {
        Cd(*e).is_valid()
    }

    fn run(a: &Cd, b: &Cd) -> Outcome {
        replay(
            &CD_KIND,
            live,
            &a.0,
            &b.0,
            plan_update(a, b).unwrap().as_slice(),
        )
    }

    fn base() -> Stage1Cd {
        Stage1Cd {
            asid: 0x1234,
            ttb0: 0x0008_1234_5678_9000,
            t0sz: 25,
            tg0: 0,
            ips: 2,
            ir0: 1,
            or0: 1,
            sh0: 3,
            mair: 0x0000_0000_0044_FF04,
            record_faults: true,
            affd: false,
        }
    }

    #[test]
    fn encoding() {
        let cd = Cd::new(&base()).unwrap();
        // dword 0, by hand from the spec's table:
        //   T0SZ [5:0]   = 25            -> 0x19
        //   TG0  [7:6]   = 0
        //   IR0  [9:8]   = 1             -> 0x100
        //   OR0  [11:10] = 1             -> 0x400
        //   SH0  [13:12] = 3             -> 0x3000
        //   EPD1 [30]    = 1             -> 0x4000_0000
        //   V    [31]    = 1             -> 0x8000_0000
        //   IPS  [34:32] = 2             -> 0x2_0000_0000
        //   AA64 [41]    = 1             -> 0x200_0000_0000
        //   R    [45]    = 1             -> 0x2000_0000_0000
        //   A    [46]    = 1             -> 0x4000_0000_0000
        //   ASET [47]    = 1             -> 0x8000_0000_0000
        //   ASID [63:48] = 0x1234        -> 0x1234_0000_0000_0000
        assert_eq!(cd.0[0], 0x1234_E202_C000_3519);
        // dword 1: TTB0 [51:4], the address itself.
        assert_eq!(cd.0[1], 0x0008_1234_5678_9000);
        assert_eq!(cd.0[2], 0);
        // dword 3: MAIR.
        assert_eq!(cd.0[3], 0x0000_0000_0044_FF04);
        assert_eq!(&cd.0[4..], &[0; 4]);
        assert!(cd.is_valid());
        assert_eq!(cd.asid(), 0x1234);
        assert_eq!(cd.ttb0(), 0x0008_1234_5678_9000);
        assert_eq!(cd.mair(), 0x44_FF04);
        assert!(!Cd::invalid().is_valid());
    }

    #[test]
    fn single_fields() {
        let d0 = |c: Stage1Cd| Cd::new(&c).unwrap().0[0];
        let b = d0(base());
        assert_eq!(
            d0(Stage1Cd {
                affd: true,
                ..base()
            }) ^ b,
            1 << 35
        );
        assert_eq!(
            d0(Stage1Cd {
                record_faults: false,
                ..base()
            }) ^ b,
            1 << 45
        );
        assert_eq!(d0(Stage1Cd { tg0: 2, ..base() }) ^ b, 2 << 6);
        assert_eq!(d0(Stage1Cd { ips: 5, ..base() }) ^ b, (5 ^ 2) << 32);
        assert_eq!(d0(Stage1Cd { sh0: 2, ..base() }) ^ b, 1 << 12);
        // Bits that must stay clear: EPD0 14, ENDI 15, HD 42, HA 43, S 44.
        for bit in [14, 15, 42, 43, 44] {
            assert_eq!(b & (1 << bit), 0, "bit {bit}");
        }
    }

    #[test]
    fn rejects() {
        let err = |c: Stage1Cd| Cd::new(&c).unwrap_err();
        assert_eq!(
            err(Stage1Cd { ips: 6, ..base() }),
            Error::Unsupported(Unsupported::AddressSize)
        );
        assert_eq!(
            err(Stage1Cd { ips: 7, ..base() }),
            Error::Unsupported(Unsupported::AddressSize)
        );
        assert_eq!(
            err(Stage1Cd {
                ttb0: 0x1008,
                ..base()
            }),
            Error::Misaligned {
                addr: 0x1008,
                align: 16
            }
        );
        for c in [
            Stage1Cd {
                ttb0: 1 << 52,
                ..base()
            },
            Stage1Cd { t0sz: 64, ..base() },
            Stage1Cd { tg0: 3, ..base() },
            Stage1Cd { sh0: 1, ..base() },
            Stage1Cd { ir0: 4, ..base() },
            Stage1Cd { or0: 9, ..base() },
        ] {
            assert!(
                matches!(err(c), Error::Invalid(Invalid::Field { .. })),
                "{c:?}"
            );
        }
    }

    fn cd(asid: u16, ttb0: u64) -> Cd {
        Cd::new(&Stage1Cd {
            asid,
            ttb0,
            ..base()
        })
        .unwrap()
    }

    #[test]
    fn used_bits() {
        assert_eq!(Cd::invalid().used_bits(), [1 << 31, 0, 0, 0, 0, 0, 0, 0]);
        let c = cd(1, 0x1000);
        let u = c.used_bits();
        // EPD1 = 1: T1SZ..SH1 [29:16] and TTB1 [55:4] are not read.
        assert_eq!(u[0], !0x3FFF_0000);
        assert_eq!(u[2], !0x00FF_FFFF_FFFF_FFF0);
        assert_eq!(u[1], !0);
        assert_eq!(&u[3..], &[!0; 5]);
        // EPD1 = 0: everything.
        let mut t1 = c;
        t1.0[0] &= !bits(CD_0::EPD1);
        assert_eq!(t1.used_bits(), [!0; 8]);
        // The encoder sets only used bits.
        assert!((0..8).all(|i| c.0[i] & !u[i] == 0));
    }

    #[test]
    fn plan_install_and_clear() {
        let c = cd(1997, 0x4000_0000);
        assert_eq!(
            plan_update(&Cd::invalid(), &c).unwrap().as_slice(),
            &[
                Write {
                    dword: 1,
                    value: c.0[1]
                },
                Write {
                    dword: 3,
                    value: c.0[3]
                },
                Publish,
                Sync,
                Write {
                    dword: 0,
                    value: c.0[0]
                },
                Publish,
                Sync
            ]
        );
        assert_eq!(
            plan_update(&c, &Cd::invalid()).unwrap().as_slice(),
            &[
                Write { dword: 0, value: 0 },
                Publish,
                Sync,
                Write { dword: 1, value: 0 },
                Write { dword: 3, value: 0 },
                Publish,
                Sync
            ]
        );
    }

    #[test]
    fn plan_asid_change_is_one_store() {
        let a = cd(778, 0x4000_0000);
        let b = cd(1997, 0x4000_0000);
        assert_eq!(
            plan_update(&a, &b).unwrap().as_slice(),
            &[
                Write {
                    dword: 0,
                    value: b.0[0]
                },
                Publish,
                Sync
            ]
        );
    }

    /// CD transitions: Linux's KUnit CD cases (its SVA cases have no
    /// equivalent here) and the TTB0 changes, with this driver's asserted
    /// syncs and hitlessness. Printed rows are the README table's.
    #[test]
    fn transition_table() {
        let inv = Cd::invalid();
        let a = cd(778, 0x4000_0000);
        let b = cd(1997, 0x4000_0000);
        let t = cd(778, 0x5000_0000);
        let bt = cd(1997, 0x5000_0000);
        let mair = Cd::new(&Stage1Cd {
            mair: 0xFF,
            ..base()
        })
        .unwrap();
        // (name, from, to, Linux (syncs, hitless), ours (syncs, hitless))
        let rows: [(&str, Cd, Cd, Option<(usize, bool)>, (usize, bool)); 9] = [
            ("cd: invalid -> s1", inv, b, Some((2, false)), (2, true)),
            ("cd: s1 -> invalid", b, inv, Some((2, false)), (2, true)),
            ("cd: ASID change", a, b, Some((1, true)), (1, true)),
            ("cd: ASID change back", b, a, Some((1, true)), (1, true)),
            ("cd: TTB0 change", a, t, None, (1, true)),
            ("cd: TTB0 change back", t, a, None, (1, true)),
            ("cd: ASID and TTB0 change", a, bt, None, (3, false)),
            (
                "cd: MAIR change",
                cd(0x1234, 0x0008_1234_5678_9000),
                mair,
                None,
                (1, true),
            ),
            ("cd: ASID and TTB0 change back", bt, a, None, (3, false)),
        ];
        for (name, from, to, linux, ours) in rows {
            let o = run(&from, &to);
            assert!(o.is_safe(), "{name}: {o:?}");
            let l = match linux {
                Some((n, h)) => std::format!("{n} ({})", if h { "hitless" } else { "not hitless" }),
                None => std::string::String::from("-"),
            };
            std::println!(
                "| {name} | {} | {} | {l} |",
                o.syncs,
                if o.hitless { "yes" } else { "no" }
            );
            assert_eq!((o.syncs, o.hitless), ours, "{name}");
            if let Some((syncs, hitless)) = linux {
                assert!(o.syncs <= syncs && (o.hitless || !hitless), "{name}");
            }
        }
    }

    #[test]
    fn any_order_model_all_transitions() {
        let mut all: Vec<Cd> = Vec::new();
        all.push(Cd::invalid());
        for asid in [1, 2] {
            for ttb in [0x4000_0000, 0x5000_0000] {
                all.push(cd(asid, ttb));
            }
        }
        let mut epd1_clear = cd(1, 0x4000_0000);
        epd1_clear.0[0] &= !bits(CD_0::EPD1);
        epd1_clear.0[2] = 0x6000_0000;
        all.push(epd1_clear);
        for a in &all {
            for b in &all {
                let o = run(a, b);
                assert!(o.is_safe(), "{a:x?} -> {b:x?}: {o:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn accepted_fields_read_back(asid: u16, ttb in 0u64..(1 << 48), mair: u64, t0sz in 0u8..64) {
            let c = Stage1Cd { asid, ttb0: ttb << 4, mair, t0sz, ..base() };
            let cd = Cd::new(&c).unwrap();
            prop_assert_eq!(cd.asid(), asid);
            prop_assert_eq!(cd.ttb0(), ttb << 4);
            prop_assert_eq!(cd.mair(), mair);
            prop_assert!(cd.is_valid());
        }

        #[test]
        fn every_plan_is_safe(a: [u64; 8], b: [u64; 8], va: bool, vb: bool) {
            let mut a = Cd(a);
            let mut b = Cd(b);
            a.0[0] = (a.0[0] & !bits(CD_0::V)) | if va { bits(CD_0::V) } else { 0 };
            b.0[0] = (b.0[0] & !bits(CD_0::V)) | if vb { bits(CD_0::V) } else { 0 };
            let o = run(&a, &b);
            prop_assert!(o.is_safe(), "{:x?} -> {:x?}: {:?}", a, b, o);
        }

        #[test]
        fn never_panics(asid: u16, ttb0: u64, t0sz: u8, tg0: u8, ips: u8, ir0: u8, or0: u8, sh0: u8) {
            let c = Stage1Cd { asid, ttb0, t0sz, tg0, ips, ir0, or0, sh0, ..base() };
            let _ = Cd::new(&c);
        }
    }
}
