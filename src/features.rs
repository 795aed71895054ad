//! The SMMU's ID registers decoded into typed features.
//!
//! The driver reads the raw ID registers once ([`IdRegs`]) and turns them
//! into [`Features`] with [`Features::from_id_regs`], which also refuses the
//! configurations this driver cannot drive. Decoding is total: every bit
//! pattern either decodes or yields a typed [`Error::Unsupported`]; reserved
//! encodings are read conservatively (each case is documented on the field).

use core::fmt;

use tock_registers::LocalRegisterCopy;

use crate::error::{Error, Result, Unsupported};
use crate::regs::{AIDR, IDR0, IDR1, IDR3, IDR5, IIDR};

/// Raw values of the ID registers the driver decodes, as read from page 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdRegs {
    /// SMMU_IDR0.
    pub idr0: u32,
    /// SMMU_IDR1.
    pub idr1: u32,
    /// SMMU_IDR3.
    pub idr3: u32,
    /// SMMU_IDR5.
    pub idr5: u32,
    /// SMMU_IIDR.
    pub iidr: u32,
    /// SMMU_AIDR.
    pub aidr: u32,
}

/// Architecture version from SMMU_AIDR: `SMMUv{major}.{minor}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ArchVersion {
    /// Major version: 3 + AIDR.ArchMajorRev.
    pub major: u8,
    /// Minor version: AIDR.ArchMinorRev.
    pub minor: u8,
}

impl fmt::Display for ArchVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SMMUv{}.{}", self.major, self.minor)
    }
}

/// Translation table formats the SMMU walks (IDR0.TTF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// AArch32 (LPAE) tables only. Never produced by
    /// [`Features::from_id_regs`], which refuses such an SMMU.
    Aarch32,
    /// AArch64 tables only.
    Aarch64,
    /// Both AArch32 and AArch64 tables.
    Both,
}

/// Hardware translation table updates (IDR0.HTTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Httu {
    /// No hardware updates. Also used for the reserved encoding 3.
    None,
    /// Hardware Access flag updates.
    Access,
    /// Hardware Access flag and Dirty state updates.
    AccessDirty,
}

/// Stall support (IDR0.STALL_MODEL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallModel {
    /// Stall and terminate models both supported. Also used for the reserved
    /// encoding 3 (the most general assumption: a stream may stall).
    Stall,
    /// Only the terminate model: faulting transactions are never stalled.
    NoStall,
    /// Only the stall model (IDR0.STALL_MODEL = 0b10, "stall forced"):
    /// STE.S2S = 0 in a stage-2 STE and CD.S = 0 are ILLEGAL (C_BAD_STE /
    /// C_BAD_CD), and so is STE.S1STALLD = 1. Faulting transactions of
    /// translation-related faults stall until software answers their event
    /// with CMD_RESUME, or ends them with CMD_STALL_TERM.
    ForceStall,
}

/// Endianness of translation tables the SMMU can walk (IDR0.TTENDIAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtEndian {
    /// Little- and big-endian (selected per STE/CD).
    Mixed,
    /// Little-endian only.
    Little,
    /// Big-endian only. Never produced by [`Features::from_id_regs`], which
    /// refuses such an SMMU.
    Big,
}

/// Translation granules are shared with the stage-2 tables.
pub use crate::stage2::Granule;

/// Implementation identification (SMMU_IIDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Implementation {
    /// JEP106 code of the implementer (IIDR.Implementer, 12 bits).
    pub implementer: u16,
    /// Product ID (IIDR.ProductID, 12 bits).
    pub product: u16,
    /// Major revision (IIDR.Variant).
    pub variant: u8,
    /// Minor revision (IIDR.Revision).
    pub revision: u8,
}

/// JEP106 code of Arm Ltd. in SMMU_IIDR.Implementer.
pub const IIDR_IMPLEMENTER_ARM: u16 = 0x43B;
/// SMMU_IIDR.ProductID of the Arm CoreLink MMU-600.
pub const IIDR_PRODUCT_MMU_600: u16 = 0x483;
/// SMMU_IIDR.ProductID of the Arm CoreLink MMU-700.
pub const IIDR_PRODUCT_MMU_700: u16 = 0x487;

/// At most this many commands may precede a CMD_SYNC on an SMMU with
/// [`Errata::cmdq_force_sync`] (the batch size after which Linux forces
/// one, minus the SYNC itself).
pub const FORCE_SYNC_COMMANDS: usize = 63;

/// Implementation errata the driver works around, keyed by SMMU_IIDR.
///
/// Each workaround is also reflected in the features it affects (for
/// example [`Features::btm`] is cleared on MMU-700), so callers that only
/// read [`Features`] are safe too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Errata {
    /// Arm erratum 2812531 (MMU-700): a long run of commands without a
    /// CMD_SYNC may be processed incorrectly. The command queue inserts a
    /// CMD_SYNC (and waits for it) after every [`FORCE_SYNC_COMMANDS`]
    /// commands, and range invalidations are capped to fit in one such run.
    pub cmdq_force_sync: bool,
    /// Arm erratum 1076982 (MMU-600 r0p0..r0p2): SEV on queue activity is
    /// unreliable; SEV is reported absent.
    pub no_sev: bool,
    /// Arm errata 1209401 (MMU-600 before r2) and 2268618/2812531
    /// (MMU-700): nested translation is unreliable; [`Features::nested`]
    /// reports it absent.
    pub no_nesting: bool,
}

impl Errata {
    /// The errata of the implementation `imp`.
    pub fn of(imp: &Implementation) -> Errata {
        let mut e = Errata::default();
        if imp.implementer != IIDR_IMPLEMENTER_ARM {
            return e;
        }
        match imp.product {
            IIDR_PRODUCT_MMU_600 => {
                e.no_sev = imp.variant == 0 && imp.revision <= 2;
                e.no_nesting = imp.variant < 2;
            }
            IIDR_PRODUCT_MMU_700 => {
                e.cmdq_force_sync = true;
                e.no_nesting = true;
            }
            _ => {}
        }
        e
    }
}

/// Everything the driver needs to know about one SMMU, decoded from its ID
/// registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Architecture version (AIDR).
    pub version: ArchVersion,
    /// Stage 1 translation (IDR0.S1P).
    pub stage1: bool,
    /// Stage 2 translation (IDR0.S2P).
    pub stage2: bool,
    /// Translation table formats (IDR0.TTF). Always includes AArch64.
    pub table_format: TableFormat,
    /// The SMMU's table, queue and walk accesses are IO-coherent
    /// (IDR0.COHACC). When false, every CPU write the SMMU reads must be
    /// cleaned to the point of coherency.
    pub coherent: bool,
    /// ASID width: 16 with IDR0.ASID16, else 8.
    pub asid_bits: u8,
    /// VMID width: 16 with IDR0.VMID16, else 8.
    pub vmid_bits: u8,
    /// Two-level stream tables (IDR0.ST_LEVEL = 1). The reserved encodings 2
    /// and 3 are read as linear only.
    pub two_level_strtab: bool,
    /// Two-level context descriptor tables (IDR0.CD2L).
    pub cd2l: bool,
    /// StreamID width (IDR1.SIDSIZE), clamped to the architectural maximum 32.
    pub sid_bits: u8,
    /// SubstreamID width (IDR1.SSIDSIZE), clamped to the architectural
    /// maximum 20.
    pub ssid_bits: u8,
    /// log2 of the maximum command queue entries (IDR1.CMDQS), clamped to 19.
    pub cmdq_max_log2: u8,
    /// log2 of the maximum event queue entries (IDR1.EVENTQS), clamped to 19.
    pub eventq_max_log2: u8,
    /// log2 of the maximum PRI queue entries (IDR1.PRIQS), clamped to 19.
    pub priq_max_log2: u8,
    /// Output address size in bits (IDR5.OAS): 32, 36, 40, 42, 44, 48 or 52.
    /// The reserved encoding 7 (56 bits from SMMUv3.4, which needs 128-bit
    /// descriptors), and 6 on an SMMUv3.0, where it is reserved, are read
    /// as 48 bits: every defined encoding
    /// above 48 is a superset of it, so the driver never programs an output
    /// address the SMMU cannot emit, and it does not fall back to a size so
    /// small that ordinary RAM above 4 GiB becomes unreachable.
    pub oas_bits: u8,
    /// Input address size in bits. This driver uses the architecture's rule
    /// (IHI 0070, "Address sizes"): IAS = OAS when only AArch64 tables are
    /// supported, and IAS = max(OAS, 40) when AArch32 (LPAE) tables are
    /// supported too. It bounds stage-2 input (IPA) sizes and stage-1 output
    /// sizes in nested mode; stage-1 VA sizes are governed by IDR5.VAX
    /// (48 bits unless 52-bit VAs are implemented).
    pub ias_bits: u8,
    /// 4 KiB granule (IDR5.GRAN4K).
    pub granule_4k: bool,
    /// 16 KiB granule (IDR5.GRAN16K).
    pub granule_16k: bool,
    /// 64 KiB granule (IDR5.GRAN64K).
    pub granule_64k: bool,
    /// Range-based TLB invalidation (IDR3.RIL).
    pub ril: bool,
    /// Break-before-make level (IDR3.BBML): 0, 1 or 2. The reserved encoding
    /// 3 is read as 0 (no relaxation).
    pub bbml: u8,
    /// MSI generation (IDR0.MSI).
    pub msi: bool,
    /// Hypervisor stage 1 contexts, EL2 StreamWorld (IDR0.HYP).
    pub hyp: bool,
    /// PCIe ATS (IDR0.ATS).
    pub ats: bool,
    /// PCIe PRI (IDR0.PRI).
    pub pri: bool,
    /// Broadcast TLB maintenance (IDR0.BTM).
    pub btm: bool,
    /// Hardware table updates (IDR0.HTTU).
    pub httu: Httu,
    /// Stall support (IDR0.STALL_MODEL).
    pub stall_model: StallModel,
    /// Table endianness (IDR0.TTENDIAN). Never big-endian only.
    pub tt_endian: TtEndian,
    /// VMID wildcards (IDR0.VMW).
    pub vmw: bool,
    /// Wake-up events on queue activity (IDR0.SEV).
    pub sev: bool,
    /// Implementation identification (IIDR).
    pub implementation: Implementation,
    /// Errata of this implementation, already applied to the fields above.
    pub errata: Errata,
}

/// Largest StreamID width the architecture defines.
const MAX_SID_BITS: u32 = 32;
/// Largest SubstreamID width the architecture defines.
const MAX_SSID_BITS: u32 = 20;
/// Largest queue size (log2 entries) the architecture defines.
const MAX_QUEUE_LOG2: u32 = 19;

fn clamp_u8(v: u32, max: u32) -> u8 {
    // `max` is at most 32, so the result fits in a u8.
    v.min(max) as u8
}

impl Features {
    /// Decodes the ID registers, refusing what the driver cannot drive:
    ///
    /// - no AArch64 table format (IDR0.TTF not 2 or 3):
    ///   [`Unsupported::NoAarch64Tables`];
    /// - big-endian tables only, or the reserved TTENDIAN encoding 1 (the
    ///   driver writes little-endian tables and cannot know they are
    ///   accepted): [`Unsupported::BigEndianOnly`];
    /// - neither stage 1 nor stage 2: [`Unsupported::NoTranslationStage`];
    /// - IDR1.TABLES_PRESET / QUEUES_PRESET / REL:
    ///   [`Unsupported::PresetTables`] / [`Unsupported::PresetQueues`] /
    ///   [`Unsupported::RelativeBase`];
    ///
    /// IDR0.STALL_MODEL = 0b10 (stall forced) is driven: the driver then
    /// sets STE.S2S and CD.S (IHI 0070 §5.5: either at 0 is ILLEGAL on such
    /// an SMMU), answers every stall event with CMD_RESUME
    /// ([`crate::Smmu::service`]) and ends a stream's stalls with
    /// CMD_STALL_TERM when it stops translating (see
    /// [`Features::stall_forced`]).
    pub fn from_id_regs(regs: &IdRegs) -> Result<Features> {
        let idr0 = LocalRegisterCopy::<u32, IDR0::Register>::new(regs.idr0);
        let idr1 = LocalRegisterCopy::<u32, IDR1::Register>::new(regs.idr1);
        let idr3 = LocalRegisterCopy::<u32, IDR3::Register>::new(regs.idr3);
        let idr5 = LocalRegisterCopy::<u32, IDR5::Register>::new(regs.idr5);
        let iidr = LocalRegisterCopy::<u32, IIDR::Register>::new(regs.iidr);
        let aidr = LocalRegisterCopy::<u32, AIDR::Register>::new(regs.aidr);

        let table_format = match idr0.read_as_enum(IDR0::TTF) {
            Some(IDR0::TTF::Value::Aarch64) => TableFormat::Aarch64,
            Some(IDR0::TTF::Value::Both) => TableFormat::Both,
            _ => return Err(Error::Unsupported(Unsupported::NoAarch64Tables)),
        };
        let tt_endian = match idr0.read_as_enum(IDR0::TTENDIAN) {
            Some(IDR0::TTENDIAN::Value::Mixed) => TtEndian::Mixed,
            Some(IDR0::TTENDIAN::Value::Little) => TtEndian::Little,
            _ => return Err(Error::Unsupported(Unsupported::BigEndianOnly)),
        };
        let stage1 = idr0.is_set(IDR0::S1P);
        let stage2 = idr0.is_set(IDR0::S2P);
        if !stage1 && !stage2 {
            return Err(Error::Unsupported(Unsupported::NoTranslationStage));
        }
        if idr1.is_set(IDR1::TABLES_PRESET) {
            return Err(Error::Unsupported(Unsupported::PresetTables));
        }
        if idr1.is_set(IDR1::QUEUES_PRESET) {
            return Err(Error::Unsupported(Unsupported::PresetQueues));
        }
        if idr1.is_set(IDR1::REL) {
            return Err(Error::Unsupported(Unsupported::RelativeBase));
        }

        let oas_bits = match idr5.read_as_enum(IDR5::OAS) {
            Some(IDR5::OAS::Value::Bits32) => 32,
            Some(IDR5::OAS::Value::Bits36) => 36,
            Some(IDR5::OAS::Value::Bits40) => 40,
            Some(IDR5::OAS::Value::Bits42) => 42,
            Some(IDR5::OAS::Value::Bits44) => 44,
            Some(IDR5::OAS::Value::Bits48) => 48,
            // 0b110 is reserved in SMMUv3.0 (52-bit addresses came with
            // SMMUv3.1): read as 48 bits, as the reserved 0b111 is.
            Some(IDR5::OAS::Value::Bits52)
                if aidr.read(AIDR::ARCH_MAJOR_REV) > 0 || aidr.read(AIDR::ARCH_MINOR_REV) > 0 =>
            {
                52
            }
            // Reserved: see the field's documentation.
            Some(IDR5::OAS::Value::Bits52) | None => 48,
        };
        let ias_bits = match table_format {
            TableFormat::Aarch64 => oas_bits,
            TableFormat::Aarch32 | TableFormat::Both => oas_bits.max(40),
        };

        let httu = match idr0.read_as_enum(IDR0::HTTU) {
            Some(IDR0::HTTU::Value::Access) => Httu::Access,
            Some(IDR0::HTTU::Value::AccessDirty) => Httu::AccessDirty,
            _ => Httu::None,
        };
        let stall_model = match idr0.read_as_enum(IDR0::STALL_MODEL) {
            Some(IDR0::STALL_MODEL::Value::NoStall) => StallModel::NoStall,
            Some(IDR0::STALL_MODEL::Value::ForceStall) => StallModel::ForceStall,
            _ => StallModel::Stall,
        };
        let bbml = match idr3.read_as_enum(IDR3::BBML) {
            Some(IDR3::BBML::Value::Level1) => 1,
            Some(IDR3::BBML::Value::Level2) => 2,
            _ => 0,
        };

        let implementation = Implementation {
            implementer: iidr.read(IIDR::IMPLEMENTER) as u16,
            product: iidr.read(IIDR::PRODUCTID) as u16,
            variant: iidr.read(IIDR::VARIANT) as u8,
            revision: iidr.read(IIDR::REVISION) as u8,
        };
        let errata = Errata::of(&implementation);

        Ok(Features {
            version: ArchVersion {
                major: 3 + aidr.read(AIDR::ARCH_MAJOR_REV) as u8,
                minor: aidr.read(AIDR::ARCH_MINOR_REV) as u8,
            },
            stage1,
            stage2,
            table_format,
            coherent: idr0.is_set(IDR0::COHACC),
            asid_bits: if idr0.is_set(IDR0::ASID16) { 16 } else { 8 },
            vmid_bits: if idr0.is_set(IDR0::VMID16) { 16 } else { 8 },
            two_level_strtab: idr0.matches_all(IDR0::ST_LEVEL::TwoLevel),
            cd2l: idr0.is_set(IDR0::CD2L),
            sid_bits: clamp_u8(idr1.read(IDR1::SIDSIZE), MAX_SID_BITS),
            ssid_bits: clamp_u8(idr1.read(IDR1::SSIDSIZE), MAX_SSID_BITS),
            cmdq_max_log2: clamp_u8(idr1.read(IDR1::CMDQS), MAX_QUEUE_LOG2),
            eventq_max_log2: clamp_u8(idr1.read(IDR1::EVENTQS), MAX_QUEUE_LOG2),
            priq_max_log2: clamp_u8(idr1.read(IDR1::PRIQS), MAX_QUEUE_LOG2),
            oas_bits,
            ias_bits,
            granule_4k: idr5.is_set(IDR5::GRAN4K),
            granule_16k: idr5.is_set(IDR5::GRAN16K),
            granule_64k: idr5.is_set(IDR5::GRAN64K),
            ril: idr3.is_set(IDR3::RIL),
            bbml,
            msi: idr0.is_set(IDR0::MSI),
            hyp: idr0.is_set(IDR0::HYP),
            ats: idr0.is_set(IDR0::ATS),
            pri: idr0.is_set(IDR0::PRI),
            // Arm erratum 2812531: BTM is not to be relied on on MMU-700.
            btm: idr0.is_set(IDR0::BTM) && !errata.cmdq_force_sync,
            httu,
            stall_model,
            tt_endian,
            vmw: idr0.is_set(IDR0::VMW),
            sev: idr0.is_set(IDR0::SEV) && !errata.no_sev,
            implementation,
            errata,
        })
    }

    /// Whether the SMMU forces the stall model (IDR0.STALL_MODEL = 0b10):
    /// the driver's STEs with stage 2 then carry S2S = 1 and its CDs S = 1
    /// (both 0 otherwise: with STALL_MODEL = 0b01 a 1 is ILLEGAL, and with
    /// 0b00 this driver chooses the terminate model), stall events are
    /// answered with CMD_RESUME, and CMD_STALL_TERM follows every STE
    /// change to abort. IHI 0070 §3.12.2, §4.7.1, §4.7.2, §5.5.
    pub fn stall_forced(&self) -> bool {
        self.stall_model == StallModel::ForceStall
    }

    /// The largest StreamID the SMMU accepts: `2^sid_bits - 1` (0 when the
    /// SMMU has a single stream).
    pub fn max_sid(&self) -> u32 {
        if u32::from(self.sid_bits) >= MAX_SID_BITS {
            u32::MAX
        } else {
            (1u32 << self.sid_bits) - 1
        }
    }

    /// Whether the SMMU implements translation granule `g` (IDR5.GRAN*).
    pub fn supports_granule(&self, g: Granule) -> bool {
        match g {
            Granule::K4 => self.granule_4k,
            Granule::K16 => self.granule_16k,
            Granule::K64 => self.granule_64k,
        }
    }

    /// Both translation stages, and no erratum against nesting them.
    pub fn nested(&self) -> bool {
        self.stage1 && self.stage2 && !self.errata.no_nesting
    }

    /// The most commands the driver puts in one batch before a CMD_SYNC:
    /// unlimited, except on SMMUs with [`Errata::cmdq_force_sync`].
    pub fn max_commands_per_sync(&self) -> Option<usize> {
        self.errata.cmdq_force_sync.then_some(FORCE_SYNC_COMMANDS)
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

impl fmt::Display for Features {
    /// A multi-line table, one `name : value` per line, names aligned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const W: usize = 18;
        writeln!(f, "{:<W$} : {}", "version", self.version)?;
        let stages = match (self.stage1, self.stage2) {
            (true, true) => "S1 S2 (nested)",
            (true, false) => "S1",
            (false, true) => "S2",
            (false, false) => "none",
        };
        writeln!(f, "{:<W$} : {}", "stages", stages)?;
        let domains = match (self.stage1, self.stage2) {
            (true, true) => "stage 2 (stage 1 on request)",
            (true, false) => "stage 1",
            (false, true) => "stage 2",
            (false, false) => "none",
        };
        writeln!(f, "{:<W$} : {}", "domains use", domains)?;
        let tf = match self.table_format {
            TableFormat::Aarch32 => "AArch32",
            TableFormat::Aarch64 => "AArch64",
            TableFormat::Both => "AArch32 + AArch64",
        };
        writeln!(f, "{:<W$} : {}", "table format", tf)?;
        let st = if self.two_level_strtab {
            "linear + 2-level"
        } else {
            "linear"
        };
        writeln!(f, "{:<W$} : {}", "stream table", st)?;
        writeln!(f, "{:<W$} : {}", "2-level CD tables", yes_no(self.cd2l))?;
        writeln!(
            f,
            "{:<W$} : {} / {}",
            "SID/SSID bits", self.sid_bits, self.ssid_bits
        )?;
        writeln!(
            f,
            "{:<W$} : cmdq {}, eventq {}, priq {}",
            "queues (max log2)", self.cmdq_max_log2, self.eventq_max_log2, self.priq_max_log2
        )?;
        writeln!(
            f,
            "{:<W$} : {} / {} bits",
            "OAS/IAS", self.oas_bits, self.ias_bits
        )?;
        write!(f, "{:<W$} :", "granules")?;
        for (present, name) in [
            (self.granule_4k, "4K"),
            (self.granule_16k, "16K"),
            (self.granule_64k, "64K"),
        ] {
            if present {
                write!(f, " {name}")?;
            }
        }
        if !(self.granule_4k || self.granule_16k || self.granule_64k) {
            write!(f, " none")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<W$} : {} / {}",
            "ASID/VMID bits", self.asid_bits, self.vmid_bits
        )?;
        writeln!(f, "{:<W$} : {}", "coherent", yes_no(self.coherent))?;
        writeln!(
            f,
            "{:<W$} : {} / {}",
            "RIL/BBML",
            yes_no(self.ril),
            self.bbml
        )?;
        writeln!(
            f,
            "{:<W$} : {} / {} / {} / {}",
            "MSI/HYP/ATS/PRI",
            yes_no(self.msi),
            yes_no(self.hyp),
            yes_no(self.ats),
            yes_no(self.pri)
        )?;
        writeln!(
            f,
            "{:<W$} : {} / {} / {}",
            "BTM/VMW/SEV",
            yes_no(self.btm),
            yes_no(self.vmw),
            yes_no(self.sev)
        )?;
        let httu = match self.httu {
            Httu::None => "none",
            Httu::Access => "access flag",
            Httu::AccessDirty => "access flag + dirty",
        };
        writeln!(f, "{:<W$} : {}", "HTTU", httu)?;
        let stall = match self.stall_model {
            StallModel::Stall => "stall + terminate",
            StallModel::NoStall => "terminate only",
            StallModel::ForceStall => "forced",
        };
        writeln!(f, "{:<W$} : {}", "stall model", stall)?;
        let endian = match self.tt_endian {
            TtEndian::Mixed => "mixed",
            TtEndian::Little => "little",
            TtEndian::Big => "big",
        };
        writeln!(f, "{:<W$} : {}", "TT endianness", endian)?;
        let i = &self.implementation;
        write!(
            f,
            "{:<W$} : implementer {:#05x}, product {:#05x}, r{}p{}",
            "IIDR", i.implementer, i.product, i.variant, i.revision
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;

    /// QEMU 10.0 `virt` (nested SMMU).
    const QEMU: IdRegs = IdRegs {
        idr0: 0x0D44_101B,
        idr1: 0x0273_0010,
        // HAD (bit 2) | RIL (bit 10) | BBML = 2 (bits 12:11).
        idr3: 0x0000_1404,
        idr5: 0x0000_0074,
        iidr: 0,
        aidr: 1,
    };

    #[test]
    fn qemu_virt_decodes() {
        let f = Features::from_id_regs(&QEMU).unwrap();
        assert_eq!(f.version, ArchVersion { major: 3, minor: 1 });
        assert_eq!(f.version.to_string(), "SMMUv3.1");
        assert!(f.stage1 && f.stage2 && f.nested());
        assert_eq!(f.table_format, TableFormat::Aarch64);
        assert!(f.coherent);
        assert_eq!((f.asid_bits, f.vmid_bits), (16, 16));
        assert!(f.two_level_strtab);
        assert!(!f.cd2l);
        assert_eq!((f.sid_bits, f.ssid_bits), (16, 0));
        assert_eq!(
            (f.cmdq_max_log2, f.eventq_max_log2, f.priq_max_log2),
            (19, 19, 0)
        );
        assert_eq!((f.oas_bits, f.ias_bits), (44, 44));
        assert!(f.granule_4k && f.granule_16k && f.granule_64k);
        assert!(f.ril);
        assert_eq!(f.bbml, 2);
        assert!(!f.msi && !f.hyp && !f.ats && !f.pri && !f.btm && !f.vmw && !f.sev);
        assert_eq!(f.httu, Httu::None);
        assert_eq!(f.stall_model, StallModel::NoStall);
        assert_eq!(f.tt_endian, TtEndian::Little);
        assert_eq!(f.max_sid(), 0xFFFF);
        assert!(f.supports_granule(Granule::K16));
    }

    #[test]
    fn qemu_virt_display() {
        let s = Features::from_id_regs(&QEMU).unwrap().to_string();
        for line in [
            "version            : SMMUv3.1",
            "stages             : S1 S2 (nested)",
            "domains use        : stage 2 (stage 1 on request)",
            "stream table       : linear + 2-level",
            "SID/SSID bits      : 16 / 0",
            "queues (max log2)  : cmdq 19, eventq 19, priq 0",
            "OAS/IAS            : 44 / 44 bits",
            "granules           : 4K 16K 64K",
            "ASID/VMID bits     : 16 / 16",
            "coherent           : yes",
            "RIL/BBML           : yes / 2",
            "MSI/HYP/ATS/PRI    : no / no / no / no",
            "stall model        : terminate only",
            "TT endianness      : little",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
        }
    }

    /// `-machine virt-9.1`: stage 1 only, so domains use stage 1.
    #[test]
    fn stage1_only_display() {
        let s = with(|r| r.idr0 &= !1).unwrap().to_string();
        assert!(s.lines().any(|l| l == "stages             : S1"), "{s}");
        assert!(
            s.lines().any(|l| l == "domains use        : stage 1"),
            "{s}"
        );
    }

    fn with(f: impl FnOnce(&mut IdRegs)) -> Result<Features> {
        let mut r = QEMU;
        f(&mut r);
        Features::from_id_regs(&r)
    }

    fn unsupported(u: Unsupported) -> Result<Features> {
        Err(Error::Unsupported(u))
    }

    #[test]
    fn refused_configurations() {
        // TTF = AArch32 only, and the reserved 0.
        assert_eq!(
            with(|r| r.idr0 = (r.idr0 & !0xC) | (1 << 2)),
            unsupported(Unsupported::NoAarch64Tables)
        );
        assert_eq!(
            with(|r| r.idr0 &= !0xC),
            unsupported(Unsupported::NoAarch64Tables)
        );
        // TTENDIAN = 3 (big only) and reserved 1.
        assert_eq!(
            with(|r| r.idr0 |= 3 << 21),
            unsupported(Unsupported::BigEndianOnly)
        );
        assert_eq!(
            with(|r| r.idr0 = (r.idr0 & !(3 << 21)) | (1 << 21)),
            unsupported(Unsupported::BigEndianOnly)
        );
        assert_eq!(
            with(|r| r.idr0 &= !3),
            unsupported(Unsupported::NoTranslationStage)
        );
        assert_eq!(
            with(|r| r.idr1 |= 1 << 30),
            unsupported(Unsupported::PresetTables)
        );
        assert_eq!(
            with(|r| r.idr1 |= 1 << 29),
            unsupported(Unsupported::PresetQueues)
        );
        assert_eq!(
            with(|r| r.idr1 |= 1 << 28),
            unsupported(Unsupported::RelativeBase)
        );
    }

    #[test]
    fn address_sizes() {
        let oas = |enc: u32| with(|r| r.idr5 = (r.idr5 & !7) | enc).unwrap().oas_bits;
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6, 7].map(oas),
            [32, 36, 40, 42, 44, 48, 52, 48]
        );
        // 52 bits is reserved in SMMUv3.0.
        let v30 = with(|r| {
            r.aidr = 0;
            r.idr5 |= 6;
        });
        assert_eq!(v30.unwrap().oas_bits, 48);
        // AArch32 tables too: IAS is at least 40.
        let f = with(|r| {
            r.idr0 |= 3 << 2;
            r.idr5 &= !7;
        })
        .unwrap();
        assert_eq!(
            (f.table_format, f.oas_bits, f.ias_bits),
            (TableFormat::Both, 32, 40)
        );
        let f = with(|r| r.idr0 |= 3 << 2).unwrap();
        assert_eq!(f.ias_bits, 44);
    }

    #[test]
    fn widths_and_limits() {
        let f = with(|r| r.idr0 &= !((1 << 12) | (1 << 18))).unwrap();
        assert_eq!((f.asid_bits, f.vmid_bits), (8, 8));
        let f = with(|r| r.idr1 = (r.idr1 & !0x3F) | 63).unwrap();
        assert_eq!((f.sid_bits, f.max_sid()), (32, u32::MAX));
        let f = with(|r| r.idr1 &= !0x3F).unwrap();
        assert_eq!(f.max_sid(), 0);
        let f = with(|r| r.idr1 = 0x03FF_FFC0 | 8).unwrap();
        assert_eq!(
            (
                f.ssid_bits,
                f.cmdq_max_log2,
                f.eventq_max_log2,
                f.priq_max_log2
            ),
            (20, 19, 19, 19)
        );
        let f = with(|r| r.iidr = 0x4321_A43B).unwrap();
        assert_eq!(
            f.implementation,
            Implementation {
                implementer: 0x43B,
                product: 0x432,
                variant: 1,
                revision: 0xA
            }
        );
        let f = with(|r| r.aidr = 0x12).unwrap();
        assert_eq!(f.version.to_string(), "SMMUv4.2");
        let f = with(|r| r.idr0 |= 3 << 6).unwrap();
        assert_eq!(f.httu, Httu::None);
        let f = with(|r| r.idr0 |= 2 << 6).unwrap();
        assert_eq!(f.httu, Httu::AccessDirty);
        let f = with(|r| r.idr3 |= 3 << 11).unwrap();
        assert_eq!(f.bbml, 0);
    }

    /// STALL_MODEL = 0b10 (stall forced) is driven, and says so; 0 and 1
    /// are not "forced".
    #[test]
    fn forced_stall_is_driven() {
        let f = with(|r| r.idr0 = (r.idr0 & !(3 << 24)) | 2 << 24).unwrap();
        assert_eq!(f.stall_model, StallModel::ForceStall);
        assert!(f.stall_forced());
        let s = f.to_string();
        assert!(s.lines().any(|l| l == "stall model        : forced"), "{s}");
        // Stall-capable (0) and terminate-only (1) SMMUs: not forced.
        let f = with(|r| r.idr0 &= !(3 << 24)).unwrap();
        assert_eq!(f.stall_model, StallModel::Stall);
        assert!(!f.stall_forced());
        assert!(!Features::from_id_regs(&QEMU).unwrap().stall_forced());
    }

    /// Issue 8 item 9: errata keyed by IIDR.
    #[test]
    fn errata_by_iidr() {
        // ProductID [31:20], Variant [19:16], Revision [15:12], Implementer.
        let iidr = |product: u32, variant: u32, revision: u32| {
            product << 20 | variant << 16 | revision << 12 | 0x43B
        };
        let mmu700 = with(|r| {
            r.iidr = iidr(0x487, 1, 1);
            r.idr0 |= 1 << 5; // BTM
        })
        .unwrap();
        assert!(mmu700.errata.cmdq_force_sync && mmu700.errata.no_nesting);
        assert!(!mmu700.btm && !mmu700.nested());
        assert_eq!(mmu700.max_commands_per_sync(), Some(FORCE_SYNC_COMMANDS));
        let mmu600_early = with(|r| {
            r.iidr = iidr(0x483, 0, 2);
            r.idr0 |= 1 << 14; // SEV
        })
        .unwrap();
        assert!(!mmu600_early.sev && !mmu600_early.nested());
        assert_eq!(mmu600_early.max_commands_per_sync(), None);
        let mmu600_r2 = with(|r| r.iidr = iidr(0x483, 2, 0)).unwrap();
        assert_eq!(mmu600_r2.errata, Errata::default());
        assert!(mmu600_r2.nested());
        // Another implementer's product 0x487 is not an MMU-700.
        let other = with(|r| r.iidr = 0x487 << 20 | 0x123).unwrap();
        assert_eq!(other.errata, Errata::default());
        assert!(with(|_| ()).unwrap().nested());
    }

    proptest! {
        #[test]
        fn never_panics(idr0: u32, idr1: u32, idr3: u32, idr5: u32, iidr: u32, aidr: u32) {
            let regs = IdRegs { idr0, idr1, idr3, idr5, iidr, aidr };
            if let Ok(f) = Features::from_id_regs(&regs) {
                let _ = f.to_string();
                let _ = f.max_sid();
                prop_assert!(f.sid_bits <= 32 && f.ssid_bits <= 20);
                prop_assert!(f.ias_bits >= f.oas_bits);
            }
        }
    }
}
