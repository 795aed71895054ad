//! The driver's one error type. Every public entry point returns
//! [`Result`]; nothing in the driver panics on bad input.

use core::fmt;

/// Result alias used across the driver.
pub type Result<T> = core::result::Result<T, Error>;

/// What a bounded wait was waiting for when it timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// CR0ACK to match a CR0 write.
    Cr0Ack,
    /// GBPA.UPDATE to clear.
    GbpaUpdate,
    /// IRQ_CTRLACK to match an IRQ_CTRL write.
    IrqCtrlAck,
    /// Room in the command queue.
    CmdqSpace,
    /// A CMD_SYNC to be consumed.
    CmdSync,
}

/// A feature the driver needs and the SMMU lacks, or a configuration the
/// driver refuses to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// IDR0.TTF has no AArch64 table format.
    NoAarch64Tables,
    /// IDR0.TTENDIAN says big-endian tables only.
    BigEndianOnly,
    /// IDR0.S1P = S2P = 0.
    NoTranslationStage,
    /// IDR1.TABLES_PRESET: the stream table base is fixed by hardware.
    PresetTables,
    /// IDR1.QUEUES_PRESET: queue bases are fixed by hardware.
    PresetQueues,
    /// IDR1.REL: base addresses are relative to an implementation-defined offset.
    RelativeBase,
    /// The operation needs stage 1 translation and IDR0.S1P = 0.
    Stage1,
    /// The operation needs stage 2 translation and IDR0.S2P = 0.
    Stage2,
    /// The operation needs nested translation (both stages).
    Nested,
    /// Two-level stream tables were requested and IDR0.ST_LEVEL has none.
    TwoLevelStreamTable,
    /// A translation granule the SMMU does not implement (IDR5.GRAN*).
    Granule,
    /// An address size beyond the SMMU's OAS/IAS.
    AddressSize,
    /// IDR0.STALL_MODEL = forced stall. No longer returned: the driver
    /// drives such an SMMU (STE.S2S = CD.S = 1, CMD_RESUME for every stall
    /// event, CMD_STALL_TERM on detach; see `Features::stall_forced`). Kept
    /// so that code matching on it still compiles.
    ForcedStall,
    /// MSI configuration was given and IDR0.MSI = 0.
    Msi,
}

/// Why a translation-table geometry or edit was refused
/// ([`Error::Table`]): the page-table engine (`crate::pgtable`) and the
/// stage-2 configuration ([`crate::stage2::Stage2Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// An output address size (bits) that no PS / IPS encoding names: the
    /// sizes are 32, 36, 40, 42, 44, 48 and 52.
    OutputSize(u32),
    /// A PS / IPS encoding the architecture reserves (7).
    ReservedOutputSize(u8),
    /// An input (IPA or VA) size below 25 bits: T0SZ above 39 needs
    /// FEAT_TTST, which this driver does not support.
    InputTooSmall(u32),
    /// A stage-2 IPA size larger than the output size.
    InputAboveOutput {
        /// IPA bits.
        input: u32,
        /// Output address bits.
        output: u32,
    },
    /// The start level cannot resolve an input of this size (at stage 2:
    /// with at most 16 concatenated start tables).
    StartLevel {
        /// The start level.
        level: u32,
        /// Input address bits.
        input: u32,
    },
    /// A stage-2 start level the architecture forbids with this output
    /// size (4K level 0 needs more than 42 bits, 16K level 1 more than 40,
    /// 64K level 1 more than 42).
    StartLevelForOutput {
        /// The start level.
        level: u32,
        /// Output address bits.
        output: u32,
    },
    /// VTCR_EL2 sets fields this driver does not support (the bits set).
    VtcrFields(u64),
    /// VTCR_EL2.TG0 holds the reserved granule encoding (0b11).
    ReservedGranule,
    /// VTCR_EL2.SL0 selects a start level this driver does not support
    /// (FEAT_TTST encodings).
    StartLevelEncoding(u8),
    /// VTCR_EL2.SH0 holds the reserved shareability encoding (0b01).
    ReservedShareability,
    /// An unmap or protect range covers only part of the block mapping
    /// holding `addr`: the block must be split first (the domain calls do
    /// that, with break-before-make or FEAT_BBM level 2).
    SplitsBlock {
        /// The first address of the range inside that block.
        addr: u64,
    },
    /// The leaf format has no encoding for this permission (stage 1 has no
    /// write-only).
    Permission(crate::pgtable::Perm),
    /// The tree's bookkeeping and its descriptors disagree (a table
    /// descriptor pointing outside the tree, or at the last level): memory
    /// corruption or a driver bug. Nothing was written.
    Corrupt,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::OutputSize(b) => write!(f, "no output size encoding for {b} bits"),
            TableError::ReservedOutputSize(ps) => {
                write!(f, "output size encoding {ps} is reserved")
            }
            TableError::InputTooSmall(b) => write!(f, "input size {b} bits is below 25"),
            TableError::InputAboveOutput { input, output } => {
                write!(f, "IPA size {input} bits exceeds the output size {output}")
            }
            TableError::StartLevel { level, input } => {
                write!(f, "start level {level} cannot resolve {input} input bits")
            }
            TableError::StartLevelForOutput { level, output } => {
                write!(
                    f,
                    "start level {level} not permitted with {output}-bit output"
                )
            }
            TableError::VtcrFields(bits) => write!(f, "VTCR_EL2 sets unsupported bits {bits:#x}"),
            TableError::ReservedGranule => write!(f, "VTCR_EL2.TG0 is reserved"),
            TableError::StartLevelEncoding(sl0) => {
                write!(f, "VTCR_EL2.SL0 = {sl0} is not a supported start level")
            }
            TableError::ReservedShareability => write!(f, "VTCR_EL2.SH0 is reserved"),
            TableError::SplitsBlock { addr } => {
                write!(f, "range covers part of the block mapping at {addr:#x}")
            }
            TableError::Permission(p) => write!(f, "the format cannot encode permission {p:?}"),
            TableError::Corrupt => write!(f, "table descriptors and bookkeeping disagree"),
        }
    }
}

/// A command-queue error reported in CMDQ_CONS.ERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdqError {
    /// CERROR_NONE (0): no error recorded.
    None,
    /// CERROR_ILL (1): illegal command.
    Illegal,
    /// CERROR_ABT (2): abort on command fetch.
    Abort,
    /// CERROR_ATC_INV_SYNC (3): ATC invalidation timeout before a CMD_SYNC.
    AtcInvSync,
    /// An encoding the architecture reserves.
    Reserved(u8),
}

impl fmt::Display for CmdqError {
    /// The variant's name (as `Debug` prints it, without pulling in the
    /// `Debug` machinery where only messages are built).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdqError::None => f.write_str("None"),
            CmdqError::Illegal => f.write_str("Illegal"),
            CmdqError::Abort => f.write_str("Abort"),
            CmdqError::AtcInvSync => f.write_str("AtcInvSync"),
            CmdqError::Reserved(n) => write!(f, "Reserved({n})"),
        }
    }
}

/// A field of a hardware structure or command that an encoder refused: the
/// value is reserved, or wider than the field ([`Invalid::Field`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// STE.S2TTB (stage-2 table base): beyond 52 bits.
    S2Ttb,
    /// STE.S2T0SZ: above 63.
    S2T0sz,
    /// STE.S2SL0: reserved encoding.
    S2Sl0,
    /// STE.S2TG: reserved encoding.
    S2Tg,
    /// STE.S2PS: reserved encoding.
    S2Ps,
    /// STE.S2IR0: above 3.
    S2Ir0,
    /// STE.S2OR0: above 3.
    S2Or0,
    /// STE.S2SH0: reserved encoding.
    S2Sh0,
    /// STE.S1ContextPtr: beyond 52 bits.
    S1ContextPtr,
    /// STE.S1CDMax: above 31.
    S1CdMax,
    /// STE.S1DSS: reserved encoding.
    S1Dss,
    /// STE.S1CIR: above 3.
    S1Cir,
    /// STE.S1COR: above 3.
    S1Cor,
    /// STE.S1CSH: reserved encoding.
    S1Csh,
    /// Level-1 stream table descriptor Span: above 12.
    L1Span,
    /// Level-1 stream table descriptor L2Ptr: beyond 52 bits, or non-zero
    /// in an invalid (Span 0) descriptor.
    L2Ptr,
    /// CD.TTB0: beyond 52 bits.
    Ttb0,
    /// CD.T0SZ: above 63.
    T0sz,
    /// CD.TG0: reserved encoding.
    Tg0,
    /// CD.IR0: above 3.
    Ir0,
    /// CD.OR0: above 3.
    Or0,
    /// CD.SH0: reserved encoding.
    Sh0,
    /// TLBI range NUM, SCALE or TTL: wider than its field.
    TlbiRange,
    /// TLBI range TG: not 1, 2 or 3.
    TlbiGranule,
    /// CMD_CFGI_STE_RANGE Range: above 31.
    CfgiRange,
    /// A SubstreamID: wider than 20 bits.
    Ssid,
    /// MSI MemAttr: above 15.
    MsiMemAttr,
    /// MSI shareability: reserved encoding.
    MsiSh,
}

/// Which caller-supplied value the driver refused ([`Error::Invalid`]).
/// Each case names what was wrong, with the value where there is one; none
/// of them changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// A field value an encoder cannot encode.
    Field {
        /// The field.
        field: Field,
        /// The value refused.
        value: u64,
    },
    /// A DMA allocation whose size is zero or not a power of two, or whose
    /// alignment is not a power of two.
    DmaLayout {
        /// The size asked for, in bytes.
        size: usize,
        /// The alignment asked for, in bytes.
        align: usize,
    },
    /// A stream table of this many StreamID bits in this format (linear:
    /// at most 16; two-level: 8 to 24).
    StreamTableSize {
        /// StreamID bits asked for.
        sid_bits: u32,
    },
    /// An STE dword index above 7.
    SteDword(usize),
    /// An MSI doorbell at address 0.
    MsiDoorbell,
    /// An ID allocator width other than 8 or 16 bits.
    IdWidth(u32),
    /// An ID beyond the allocator's width (a VMID wider than IDR0.VMID16
    /// allows).
    IdOutOfRange(u32),
    /// ID 0, which is reserved (VMID 0 belongs to streams without stage 2).
    IdReserved,
    /// An ID already allocated (a CPU VMID another domain uses).
    IdInUse(u32),
    /// An empty list of StreamIDs.
    NoStreamIds,
    /// A group's StreamIDs are not all detached, nor all attached to one
    /// domain: `sid` is the first one that differs.
    MixedGroup {
        /// The first StreamID placed differently from the first one.
        sid: u32,
    },
    /// A VMID was asked for on an SMMU without stage 2 (a stage-1 domain
    /// has none).
    VmidWithoutStage2,
    /// Write-only permission for a stage-1 domain (VMSAv8-64 stage 1 has
    /// no write-only encoding).
    WriteOnlyStage1,
    /// A stage-1 operation reached a domain that is not stage 1 (a driver
    /// bug, reported rather than acted on).
    NotStage1,
    /// An SMMU register region at address 0, or smaller than
    /// [`crate::MMIO_SIZE`].
    RegisterRegion,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Field { field, value } => write!(f, "{field:?} cannot encode {value:#x}"),
            Invalid::DmaLayout { size, align } => write!(
                f,
                "DMA size {size:#x} and alignment {align:#x} must be powers of two"
            ),
            Invalid::StreamTableSize { sid_bits } => {
                write!(
                    f,
                    "no stream table of {sid_bits} StreamID bits in this format"
                )
            }
            Invalid::SteDword(i) => write!(f, "STE dword index {i}"),
            Invalid::MsiDoorbell => write!(f, "MSI doorbell at address 0"),
            Invalid::IdWidth(b) => write!(f, "ID width {b}: must be 8 or 16 bits"),
            Invalid::IdOutOfRange(id) => write!(f, "ID {id:#x} beyond the allocator's width"),
            Invalid::IdReserved => write!(f, "ID 0 is reserved"),
            Invalid::IdInUse(id) => write!(f, "ID {id:#x} already allocated"),
            Invalid::NoStreamIds => write!(f, "empty StreamID list"),
            Invalid::MixedGroup { sid } => write!(
                f,
                "StreamID {sid:#x}: a group's StreamIDs must all be detached or all in one domain"
            ),
            Invalid::VmidWithoutStage2 => write!(f, "no VMIDs on an SMMU without stage 2"),
            Invalid::WriteOnlyStage1 => write!(f, "stage 1 has no write-only permission"),
            Invalid::NotStage1 => write!(f, "not a stage-1 domain"),
            Invalid::RegisterRegion => {
                write!(f, "SMMU register region at 0 or smaller than pages 0 and 1")
            }
        }
    }
}

/// Every way a driver call can fail. Each case is typed: callers branch on
/// it, and none of them leaves a half-made change behind unless it says so
/// ([`Error::RollbackFailed`]).
///
#[cfg_attr(feature = "testing", doc = "```")]
#[cfg_attr(not(feature = "testing"), doc = "```ignore")]
/// use smmuv3::testing::{HostHal, SmmuModel};
/// use smmuv3::{Config, DomainOptions, Error, Granule, Invalid, Perm, Smmu, Stage2Config};
///
/// let model = SmmuModel::default();
/// // SAFETY: the model outlives the driver; nothing else drives it.
/// let smmu = unsafe { Smmu::<HostHal>::new(model.base(), Config::default()) }?;
/// smmu.enable()?;
/// let options = DomainOptions {
///     vmid: Some(5), // the VM's CPU VMID
///     ..DomainOptions::new(Stage2Config::new(Granule::K4, 40, 48)?)
/// };
/// let vm = smmu.create_domain(options)?;
/// match smmu.create_domain(options) {
///     Err(Error::Invalid(Invalid::IdInUse(5))) => {} // VMID 5 is taken
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(
///     smmu.map(vm, 0x1001, 0x8000_0000, 0x1000, Perm::Read),
///     Err(Error::Misaligned { addr: 0x1001, align: 0x1000 })
/// );
/// assert_eq!(smmu.detach(0x42), Err(Error::SidNotAttached(0x42)));
/// # Ok::<(), smmuv3::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A bounded wait expired.
    Timeout(Wait),
    /// The SMMU lacks something the caller asked for.
    Unsupported(Unsupported),
    /// The HAL had no memory.
    NoMemory,
    /// The HAL returned memory that breaks its promises.
    BadHalMemory {
        /// Physical address of the region the HAL returned.
        paddr: u64,
        /// Size asked for, in bytes.
        size: usize,
        /// Alignment asked for, in bytes.
        align: usize,
    },
    /// A translation-table geometry or edit was refused.
    Table(TableError),
    /// A caller-supplied value is invalid; [`Invalid`] says which.
    Invalid(Invalid),
    /// A StreamID beyond the stream table (2^SIDSIZE, or the table's size).
    SidOutOfRange {
        /// The StreamID refused.
        sid: u32,
        /// The number of StreamIDs the table covers.
        limit: u32,
    },
    /// The StreamID already has a configuration installed.
    SidAttached(u32),
    /// The StreamID has no configuration to detach.
    SidNotAttached(u32),
    /// No domain with this handle.
    UnknownDomain(u32),
    /// The domain still has streams attached.
    DomainBusy(u32),
    /// No free VMID.
    VmidExhausted,
    /// No free ASID.
    AsidExhausted,
    /// An ID freed that was not allocated (double free) or never can be.
    IdNotAllocated(u32),
    /// An address or size not aligned to the granule.
    Misaligned {
        /// The address or size refused.
        addr: u64,
        /// The alignment it needs, in bytes.
        align: u64,
    },
    /// A zero-length range.
    ZeroLength,
    /// `addr + len` overflows, or goes beyond the address space.
    RangeOverflow {
        /// Start of the range.
        addr: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// The range overlaps an existing mapping at `addr`.
    Overlap {
        /// An address of the range that is already mapped.
        addr: u64,
    },
    /// Nothing is mapped at `addr`.
    NotMapped {
        /// The first address of the range with no mapping.
        addr: u64,
    },
    /// A queue of 2^log2 entries exceeds the SMMU's maximum of 2^max.
    QueueTooLarge {
        /// log2 of the entries asked for.
        log2: u32,
        /// log2 of the SMMU's maximum (IDR1.CMDQS/EVENTQS).
        max: u32,
    },
    /// The command queue stopped on an error; `index` is the slot of the
    /// offending command, `opcode` its opcode.
    CommandError {
        /// CMDQ_CONS.ERR.
        error: CmdqError,
        /// Queue slot of the offending command.
        index: u32,
        /// Its opcode.
        opcode: u8,
    },
    /// The SMMU entered service failure mode (GERROR.SFM_ERR) and was disabled.
    ServiceFailure,
    /// The driver is not enabled (or was disabled after a fatal error).
    NotEnabled,
    /// The domain's stage-2 tables belong to the hypervisor
    /// ([`crate::smmu::Smmu::create_external_domain`]): the driver does not
    /// edit or read them.
    ExternalTables(u32),
    /// The domain translates with stage 1 ([`crate::domain::Stage::Stage1`]):
    /// it has no stage-2 tables to read or share.
    Stage1Tables(u32),
    /// An STE/CD update plan would exceed its fixed capacity (a driver bug:
    /// never a silently dropped step).
    PlanTooLong,
    /// The StreamID belongs to isolation group `group`, which has more
    /// than one StreamID: it is attached and detached only as a whole
    /// (`Smmu::attach_group`, `Smmu::detach_group`).
    SidInGroup {
        /// The StreamID asked for alone (or left out of a group call).
        sid: u32,
        /// The group it belongs to.
        group: u32,
    },
    /// A group was declared with a StreamID that already belongs to
    /// another group.
    SidInOtherGroup {
        /// The StreamID.
        sid: u32,
        /// The group it already belongs to.
        group: u32,
    },
    /// No isolation group with this number.
    UnknownGroup(u32),
    /// A group call failed and could not undo its earlier steps: `sid` is
    /// left in a state other than the one the call found it in.
    RollbackFailed {
        /// The StreamID that could not be restored.
        sid: u32,
    },
    /// The StreamID is quarantined (`Smmu::quarantine`): it stays aborted
    /// until `Smmu::release`, and the call would have let it reach memory.
    Quarantined(u32),
    /// `Smmu::release` of a StreamID that is not quarantined.
    NotQuarantined(u32),
    /// No room to record one more quarantined (or pending) StreamID.
    QuarantineFull,
    /// A guest's nested-translation request was refused; nothing changed
    /// (`src/domain/nested.rs`).
    Nested(crate::domain::NestedError),
    /// A substream (CD table) call was refused; nothing changed
    /// (`src/cdtable.rs`, `src/domain/substream.rs`).
    Substream(crate::cdtable::SubstreamError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout(w) => write!(f, "timed out waiting for {w:?}"),
            Error::Unsupported(u) => write!(f, "unsupported by this SMMU: {u:?}"),
            Error::NoMemory => write!(f, "out of DMA memory"),
            Error::BadHalMemory { paddr, size, align } => {
                write!(
                    f,
                    "HAL memory at {paddr:#x} (size {size:#x}) breaks alignment {align:#x} or size"
                )
            }
            Error::Table(e) => write!(f, "translation table: {e}"),
            Error::Invalid(what) => write!(f, "invalid argument: {what}"),
            Error::SidOutOfRange { sid, limit } => {
                write!(f, "StreamID {sid:#x} beyond limit {limit:#x}")
            }
            Error::SidAttached(sid) => write!(f, "StreamID {sid:#x} is already attached"),
            Error::SidNotAttached(sid) => write!(f, "StreamID {sid:#x} is not attached"),
            Error::UnknownDomain(d) => write!(f, "unknown domain {d}"),
            Error::DomainBusy(d) => write!(f, "domain {d} still has streams attached"),
            Error::VmidExhausted => write!(f, "no free VMID"),
            Error::AsidExhausted => write!(f, "no free ASID"),
            Error::IdNotAllocated(id) => write!(f, "ID {id} is not allocated"),
            Error::Misaligned { addr, align } => {
                write!(f, "{addr:#x} is not aligned to {align:#x}")
            }
            Error::ZeroLength => write!(f, "zero-length range"),
            Error::RangeOverflow { addr, len } => {
                write!(f, "range {addr:#x}+{len:#x} overflows the address space")
            }
            Error::Overlap { addr } => write!(f, "range overlaps an existing mapping at {addr:#x}"),
            Error::NotMapped { addr } => write!(f, "nothing mapped at {addr:#x}"),
            Error::QueueTooLarge { log2, max } => {
                write!(f, "queue of 2^{log2} entries exceeds the maximum 2^{max}")
            }
            Error::CommandError {
                error,
                index,
                opcode,
            } => {
                write!(
                    f,
                    "command queue error {error} at slot {index} (opcode {opcode:#04x})"
                )
            }
            Error::ServiceFailure => write!(f, "SMMU service failure (SFM_ERR); SMMU disabled"),
            Error::NotEnabled => write!(f, "SMMU is not enabled"),
            Error::ExternalTables(d) => {
                write!(
                    f,
                    "domain {d} has hypervisor-owned tables: the driver does not edit them"
                )
            }
            Error::Stage1Tables(d) => {
                write!(
                    f,
                    "domain {d} translates with stage 1: it has no stage-2 tables"
                )
            }
            Error::PlanTooLong => write!(f, "entry update plan exceeds its capacity"),
            Error::SidInGroup { sid, group } => write!(
                f,
                "StreamID {sid:#x} belongs to isolation group {group}: attach or detach the whole group"
            ),
            Error::SidInOtherGroup { sid, group } => {
                write!(
                    f,
                    "StreamID {sid:#x} already belongs to isolation group {group}"
                )
            }
            Error::UnknownGroup(g) => write!(f, "unknown isolation group {g}"),
            Error::RollbackFailed { sid } => write!(
                f,
                "a group operation failed and StreamID {sid:#x} could not be restored"
            ),
            Error::Quarantined(sid) => {
                write!(f, "StreamID {sid:#x} is quarantined until released")
            }
            Error::NotQuarantined(sid) => write!(f, "StreamID {sid:#x} is not quarantined"),
            Error::QuarantineFull => write!(f, "too many quarantined StreamIDs"),
            Error::Nested(e) => write!(f, "nested translation refused: {e}"),
            Error::Substream(e) => write!(f, "substream refused: {e}"),
        }
    }
}

impl core::error::Error for Error {}

impl From<TableError> for Error {
    fn from(e: TableError) -> Self {
        Error::Table(e)
    }
}
