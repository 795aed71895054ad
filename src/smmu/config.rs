//! The driver's configuration, statistics and report types.

use super::*;

/// How the stream table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTableChoice {
    /// Two-level when the SMMU supports it and SIDSIZE > 8, else linear.
    Auto,
    /// Linear (covering at most 2^16 StreamIDs).
    Linear,
    /// Two-level with SPLIT = 8 (an error if the SMMU lacks it).
    TwoLevel,
}

/// Where the SMMU signals one of its interrupts as a message-signalled
/// interrupt (a 32-bit write of `data` to `doorbell`), for SMMUs with
/// IDR0.MSI. The doorbell is typically a GIC ITS `GITS_TRANSLATER` or a
/// GICv3 `GICD_SETSPI_NSR` register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiTarget {
    /// Physical address of the doorbell register: 4-byte aligned, below
    /// 2^OAS, non-zero (0 means "no MSI, use the wired interrupt").
    pub doorbell: u64,
    /// The 32-bit payload written to it.
    pub data: u32,
    /// Memory attributes of the write (IRQ_CFG2.MemAttr, the
    /// VMSAv8-64 MemAttr encoding; 0b0001 = Device-nGnRE is usual for a
    /// doorbell register).
    pub memattr: u8,
    /// Shareability of the write (IRQ_CFG2.SH: 0 non-, 2 outer, 3 inner
    /// shareable; ignored for Device memory).
    pub sh: u8,
}

impl MsiTarget {
    /// A doorbell in Device-nGnRE memory.
    pub const fn device(doorbell: u64, data: u32) -> MsiTarget {
        MsiTarget {
            doorbell,
            data,
            memattr: MSI_MEMATTR_DEVICE_NGNRE,
            sh: 0,
        }
    }
}

/// IRQ_CFG2.MemAttr encoding of Device-nGnRE.
pub const MSI_MEMATTR_DEVICE_NGNRE: u8 = 0b0001;

/// Message-signalled interrupts per interrupt source. A source left `None`
/// uses its wired interrupt (its IRQ_CFG0 is written with 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiConfig {
    /// Global errors (GERROR_IRQ_CFG0..2).
    pub gerror: Option<MsiTarget>,
    /// Event queue (EVENTQ_IRQ_CFG0..2).
    pub eventq: Option<MsiTarget>,
}

/// Driver configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Stream table format.
    pub stream_table: StreamTableChoice,
    /// log2 of the command queue's entries; clamped to the SMMU's maximum
    /// (IDR1.CMDQS).
    pub cmdq_log2: u32,
    /// log2 of the event queue's entries; clamped to the SMMU's maximum
    /// (IDR1.EVENTQS). A faulting DMA can produce many records (QEMU
    /// writes one per 4 bytes), so be generous.
    pub eventq_log2: u32,
    /// Bound on every wait, in nanoseconds of the HAL clock.
    pub timeout_ns: u64,
    /// Enable the event queue and global error interrupts (IRQ_CTRL).
    pub interrupts: bool,
    /// Whether the SMMU's memory accesses are IO-coherent, as the firmware
    /// describes the integration: the device tree's `dma-coherent`
    /// property, or the IORT node's CCA (cache coherency attribute). It
    /// overrides IDR0.COHACC, which only says what the SMMU itself can do,
    /// not whether the interconnect delivers it; a disagreement is logged
    /// as a warning. `None` trusts IDR0.COHACC.
    pub firmware_coherent: Option<bool>,
    /// Message-signalled interrupts (needs IDR0.MSI). `None`: every
    /// interrupt is wired, and every IRQ_CFG0 is written with 0.
    pub msi: Option<MsiConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream_table: StreamTableChoice::Auto,
            cmdq_log2: 8,
            eventq_log2: 11,
            timeout_ns: 1_000_000_000,
            interrupts: true,
            firmware_coherent: None,
            msi: None,
        }
    }
}

/// Cacheability and shareability of table walks, in the 2-bit STE/CD
/// encodings (cacheability: 0 Non-cacheable, 1 Write-Back write-allocate;
/// shareability: 2 Outer, 3 Inner Shareable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkAttributes {
    /// Inner cacheability (S2IR0 / IR0).
    pub inner: u8,
    /// Outer cacheability (S2OR0 / OR0).
    pub outer: u8,
    /// Shareability (S2SH0 / SH0).
    pub shareability: u8,
}

impl WalkAttributes {
    /// The attributes matching CR1 for a coherent or non-coherent SMMU.
    pub const fn for_coherency(coherent: bool) -> WalkAttributes {
        if coherent {
            WalkAttributes {
                inner: 1,
                outer: 1,
                shareability: 3,
            }
        } else {
            WalkAttributes {
                inner: 0,
                outer: 0,
                shareability: 2,
            }
        }
    }
}

/// Driver state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// SMMUEN = 0; traffic aborted by GBPA.
    Disabled = 0,
    /// Command queue on, translation not yet enabled (during `enable`).
    CommandsOnly = 1,
    /// Translating.
    Enabled = 2,
    /// Stopped after a service failure (SFM_ERR).
    Failed = 3,
}

/// Deterministic counters of the driver's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Command queue counters.
    pub cmdq: CmdqStats,
    /// Every MMIO register write so far.
    pub mmio_writes: u64,
    /// MMIO reads on the driver's hot paths (command completion, global
    /// errors, event queue): see [`crate::mmio::Mmio::read32`].
    pub mmio_reads: u64,
    /// Event records drained.
    pub events: u64,
    /// Event queue overflows seen (PROD.OVFLG).
    pub eventq_overflows: u64,
    /// Event queue aborts seen (GERROR.EVENTQ_ABT_ERR): records were lost.
    pub eventq_aborts: u64,
    /// MSI write aborts seen (GERROR.MSI_*_ABT_ERR).
    pub msi_aborts: u64,
    /// Global errors acknowledged.
    pub gerrors: u64,
}

/// What [`Smmu::handle_gerror`] found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GerrorReport {
    /// The active GERROR bits when the handler ran.
    pub active: u32,
    /// A command error it recovered from.
    pub cmdq_fault: Option<CmdqFault>,
    /// The command queue had an error but its lock was held: the submitter
    /// recovers it while waiting.
    pub cmdq_deferred: bool,
    /// GERROR.EVENTQ_ABT_ERR: an access to the event queue aborted, and
    /// records may have been lost (IHI 0070 §7.2.2). On an SMMU that
    /// stalls ([`crate::Features::stall_forced`]) stall records may be
    /// among them: their transactions then stay stalled with no event to
    /// answer. The driver cannot name them; ending them takes
    /// [`crate::Smmu::detach`] or [`crate::Smmu::quarantine`] of the
    /// streams that may have faulted (both send CMD_STALL_TERM) or
    /// [`crate::Smmu::disable`] (SMMUEN = 0 terminates every stall). A
    /// merely full queue loses no stall record: the SMMU holds it until
    /// there is room (§3.5.2, §7.4).
    pub eventq_abort: bool,
    /// MSI writes aborted.
    pub msi_abort: bool,
    /// The SMMU entered service failure mode and was disabled.
    pub service_failure: bool,
}

impl fmt::Display for GerrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GERROR active {:#x}:", self.active)?;
        if let Some(c) = self.cmdq_fault {
            write!(
                f,
                " command error {} at {:#x} (command {:#018x} {:#018x})",
                c.error, c.position, c.entry[0], c.entry[1]
            )?;
        }
        if self.cmdq_deferred {
            write!(f, " command error (left to the submitter)")?;
        }
        if self.eventq_abort {
            write!(f, " event queue abort (records lost)")?;
        }
        if self.msi_abort {
            write!(f, " MSI abort")?;
        }
        if self.service_failure {
            write!(f, " SERVICE FAILURE (SMMU disabled)")?;
        }
        Ok(())
    }
}
