//! MMIO register map of SMMUv3 page 0 and page 1 (Arm IHI 0070, chapter 6).
//!
//! Every field the driver touches is declared here by name; the rest of the
//! driver never shifts or masks register values by hand. 32-bit registers are
//! accessed with 32-bit loads and stores; the 64-bit base registers
//! (`STRTAB_BASE`, `CMDQ_BASE`, `EVENTQ_BASE`, `GERROR_IRQ_CFG0`) with 64-bit
//! accesses, which the architecture allows for them.
//!
//! The event queue's PROD/CONS live on page 1 (offset `0x1_00A8`); their page 0
//! offsets are reserved. Both 64 KiB pages must be mapped.

use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};

/// Size of one SMMU register page.
pub const PAGE_SIZE: usize = 0x1_0000;
/// Bytes of MMIO the driver needs mapped: page 0 and page 1.
pub const MMIO_SIZE: usize = 2 * PAGE_SIZE;

register_bitfields! [u32,
    /// Identification register 0: translation features.
    pub IDR0 [
        S2P OFFSET(0) NUMBITS(1) [],
        S1P OFFSET(1) NUMBITS(1) [],
        TTF OFFSET(2) NUMBITS(2) [Aarch32 = 1, Aarch64 = 2, Both = 3],
        COHACC OFFSET(4) NUMBITS(1) [],
        BTM OFFSET(5) NUMBITS(1) [],
        HTTU OFFSET(6) NUMBITS(2) [None = 0, Access = 1, AccessDirty = 2],
        DORMHINT OFFSET(8) NUMBITS(1) [],
        HYP OFFSET(9) NUMBITS(1) [],
        ATS OFFSET(10) NUMBITS(1) [],
        NS1ATS OFFSET(11) NUMBITS(1) [],
        ASID16 OFFSET(12) NUMBITS(1) [],
        MSI OFFSET(13) NUMBITS(1) [],
        SEV OFFSET(14) NUMBITS(1) [],
        ATOS OFFSET(15) NUMBITS(1) [],
        PRI OFFSET(16) NUMBITS(1) [],
        VMW OFFSET(17) NUMBITS(1) [],
        VMID16 OFFSET(18) NUMBITS(1) [],
        CD2L OFFSET(19) NUMBITS(1) [],
        VATOS OFFSET(20) NUMBITS(1) [],
        TTENDIAN OFFSET(21) NUMBITS(2) [Mixed = 0, Little = 2, Big = 3],
        STALL_MODEL OFFSET(24) NUMBITS(2) [Stall = 0, NoStall = 1, ForceStall = 2],
        TERM_MODEL OFFSET(26) NUMBITS(1) [],
        ST_LEVEL OFFSET(27) NUMBITS(2) [Linear = 0, TwoLevel = 1]
    ],
    /// Identification register 1: table and queue properties.
    pub IDR1 [
        SIDSIZE OFFSET(0) NUMBITS(6) [],
        SSIDSIZE OFFSET(6) NUMBITS(5) [],
        PRIQS OFFSET(11) NUMBITS(5) [],
        EVENTQS OFFSET(16) NUMBITS(5) [],
        CMDQS OFFSET(21) NUMBITS(5) [],
        ATTR_PERMS_OVR OFFSET(26) NUMBITS(1) [],
        ATTR_TYPES_OVR OFFSET(27) NUMBITS(1) [],
        REL OFFSET(28) NUMBITS(1) [],
        QUEUES_PRESET OFFSET(29) NUMBITS(1) [],
        TABLES_PRESET OFFSET(30) NUMBITS(1) [],
        ECMDQ OFFSET(31) NUMBITS(1) []
    ],
    /// Identification register 3: optional features of SMMUv3.1 and later.
    pub IDR3 [
        HAD OFFSET(2) NUMBITS(1) [],
        PBHA OFFSET(3) NUMBITS(1) [],
        XNX OFFSET(4) NUMBITS(1) [],
        PPS OFFSET(5) NUMBITS(1) [],
        MPAM OFFSET(7) NUMBITS(1) [],
        FWB OFFSET(8) NUMBITS(1) [],
        STT OFFSET(9) NUMBITS(1) [],
        RIL OFFSET(10) NUMBITS(1) [],
        BBML OFFSET(11) NUMBITS(2) [None = 0, Level1 = 1, Level2 = 2],
        E0PD OFFSET(13) NUMBITS(1) [],
        PTWNNC OFFSET(14) NUMBITS(1) [],
        DPT OFFSET(15) NUMBITS(1) []
    ],
    /// Identification register 5: address sizes and granules.
    pub IDR5 [
        OAS OFFSET(0) NUMBITS(3) [
            Bits32 = 0, Bits36 = 1, Bits40 = 2, Bits42 = 3, Bits44 = 4, Bits48 = 5, Bits52 = 6
        ],
        GRAN4K OFFSET(4) NUMBITS(1) [],
        GRAN16K OFFSET(5) NUMBITS(1) [],
        GRAN64K OFFSET(6) NUMBITS(1) [],
        VAX OFFSET(10) NUMBITS(2) [Bits48 = 0, Bits52 = 1, Bits56 = 2],
        STALL_MAX OFFSET(16) NUMBITS(16) []
    ],
    /// Implementation identification.
    pub IIDR [
        IMPLEMENTER OFFSET(0) NUMBITS(12) [],
        REVISION OFFSET(12) NUMBITS(4) [],
        VARIANT OFFSET(16) NUMBITS(4) [],
        PRODUCTID OFFSET(20) NUMBITS(12) []
    ],
    /// Architecture version.
    pub AIDR [
        ARCH_MINOR_REV OFFSET(0) NUMBITS(4) [],
        ARCH_MAJOR_REV OFFSET(4) NUMBITS(4) []
    ],
    /// Global enables (CR0, mirrored by CR0ACK).
    pub CR0 [
        SMMUEN OFFSET(0) NUMBITS(1) [],
        PRIQEN OFFSET(1) NUMBITS(1) [],
        EVENTQEN OFFSET(2) NUMBITS(1) [],
        CMDQEN OFFSET(3) NUMBITS(1) [],
        ATSCHK OFFSET(4) NUMBITS(1) [],
        VMW OFFSET(6) NUMBITS(3) []
    ],
    /// Memory attributes of the SMMU's own table and queue accesses.
    pub CR1 [
        QUEUE_IC OFFSET(0) NUMBITS(2) [NonCacheable = 0, WriteBack = 1, WriteThrough = 2],
        QUEUE_OC OFFSET(2) NUMBITS(2) [NonCacheable = 0, WriteBack = 1, WriteThrough = 2],
        QUEUE_SH OFFSET(4) NUMBITS(2) [NonShareable = 0, Outer = 2, Inner = 3],
        TABLE_IC OFFSET(6) NUMBITS(2) [NonCacheable = 0, WriteBack = 1, WriteThrough = 2],
        TABLE_OC OFFSET(8) NUMBITS(2) [NonCacheable = 0, WriteBack = 1, WriteThrough = 2],
        TABLE_SH OFFSET(10) NUMBITS(2) [NonShareable = 0, Outer = 2, Inner = 3]
    ],
    /// Miscellaneous controls.
    pub CR2 [
        E2H OFFSET(0) NUMBITS(1) [],
        RECINVSID OFFSET(1) NUMBITS(1) [],
        PTM OFFSET(2) NUMBITS(1) []
    ],
    /// Status.
    pub STATUSR [
        DORMANT OFFSET(0) NUMBITS(1) []
    ],
    /// Global bypass attributes: what happens to traffic while SMMUEN = 0.
    pub GBPA [
        MEMATTR OFFSET(0) NUMBITS(4) [],
        MTCFG OFFSET(4) NUMBITS(1) [],
        ALLOCCFG OFFSET(8) NUMBITS(4) [],
        SHCFG OFFSET(12) NUMBITS(2) [],
        PRIVCFG OFFSET(16) NUMBITS(2) [],
        INSTCFG OFFSET(18) NUMBITS(2) [],
        ABORT OFFSET(20) NUMBITS(1) [],
        UPDATE OFFSET(31) NUMBITS(1) []
    ],
    /// Interrupt enables (IRQ_CTRL, mirrored by IRQ_CTRLACK).
    pub IRQ_CTRL [
        GERROR_IRQEN OFFSET(0) NUMBITS(1) [],
        PRIQ_IRQEN OFFSET(1) NUMBITS(1) [],
        EVENTQ_IRQEN OFFSET(2) NUMBITS(1) []
    ],
    /// Global errors. An error is active while its GERROR bit differs from
    /// the same bit of GERRORN; software acknowledges by toggling GERRORN.
    pub GERROR [
        CMDQ_ERR OFFSET(0) NUMBITS(1) [],
        EVENTQ_ABT_ERR OFFSET(2) NUMBITS(1) [],
        PRIQ_ABT_ERR OFFSET(3) NUMBITS(1) [],
        MSI_CMDQ_ABT_ERR OFFSET(4) NUMBITS(1) [],
        MSI_EVENTQ_ABT_ERR OFFSET(5) NUMBITS(1) [],
        MSI_PRIQ_ABT_ERR OFFSET(6) NUMBITS(1) [],
        MSI_GERROR_ABT_ERR OFFSET(7) NUMBITS(1) [],
        SFM_ERR OFFSET(8) NUMBITS(1) [],
        CMDQP_ERR OFFSET(9) NUMBITS(1) []
    ],
    /// Stream table configuration.
    pub STRTAB_BASE_CFG [
        LOG2SIZE OFFSET(0) NUMBITS(6) [],
        SPLIT OFFSET(6) NUMBITS(5) [],
        FMT OFFSET(16) NUMBITS(2) [Linear = 0, TwoLevel = 1]
    ],
    /// A queue's producer index: index and wrap bit in the low 20 bits
    /// (the split depends on the queue's LOG2SIZE).
    pub Q_PROD [
        WR OFFSET(0) NUMBITS(20) [],
        /// EVENTQ/PRIQ only: the queue overflowed.
        OVFLG OFFSET(31) NUMBITS(1) []
    ],
    /// A queue's consumer index.
    pub Q_CONS [
        RD OFFSET(0) NUMBITS(20) [],
        /// CMDQ only: why the command queue stopped.
        ERR OFFSET(24) NUMBITS(7) [None = 0, Illegal = 1, Abort = 2, AtcInvSync = 3],
        /// EVENTQ/PRIQ only: overflow acknowledged.
        OVACKFLG OFFSET(31) NUMBITS(1) []
    ],
    /// Attributes of an MSI the SMMU writes.
    pub IRQ_CFG2 [
        MEMATTR OFFSET(0) NUMBITS(4) [],
        SH OFFSET(4) NUMBITS(2) []
    ]
];

register_bitfields! [u64,
    /// Stream table base address.
    pub STRTAB_BASE [
        ADDR OFFSET(6) NUMBITS(46) [],
        RA OFFSET(62) NUMBITS(1) []
    ],
    /// Queue base (CMDQ_BASE, EVENTQ_BASE, PRIQ_BASE).
    pub Q_BASE [
        LOG2SIZE OFFSET(0) NUMBITS(5) [],
        ADDR OFFSET(5) NUMBITS(47) [],
        /// Read-allocate hint (CMDQ) / write-allocate hint (EVENTQ, PRIQ).
        ALLOC OFFSET(62) NUMBITS(1) []
    ],
    /// MSI address of an interrupt source.
    pub IRQ_CFG0 [
        ADDR OFFSET(2) NUMBITS(50) []
    ]
];

register_structs! {
    /// SMMUv3 register page 0.
    pub SmmuPage0 {
        (0x000 => pub idr0: ReadOnly<u32, IDR0::Register>),
        (0x004 => pub idr1: ReadOnly<u32, IDR1::Register>),
        (0x008 => pub idr2: ReadOnly<u32>),
        (0x00C => pub idr3: ReadOnly<u32, IDR3::Register>),
        (0x010 => pub idr4: ReadOnly<u32>),
        (0x014 => pub idr5: ReadOnly<u32, IDR5::Register>),
        (0x018 => pub iidr: ReadOnly<u32, IIDR::Register>),
        (0x01C => pub aidr: ReadOnly<u32, AIDR::Register>),
        (0x020 => pub cr0: ReadWrite<u32, CR0::Register>),
        (0x024 => pub cr0ack: ReadOnly<u32, CR0::Register>),
        (0x028 => pub cr1: ReadWrite<u32, CR1::Register>),
        (0x02C => pub cr2: ReadWrite<u32, CR2::Register>),
        (0x030 => _reserved0),
        (0x040 => pub statusr: ReadOnly<u32, STATUSR::Register>),
        (0x044 => pub gbpa: ReadWrite<u32, GBPA::Register>),
        (0x048 => pub agbpa: ReadWrite<u32>),
        (0x04C => _reserved1),
        (0x050 => pub irq_ctrl: ReadWrite<u32, IRQ_CTRL::Register>),
        (0x054 => pub irq_ctrlack: ReadOnly<u32, IRQ_CTRL::Register>),
        (0x058 => _reserved2),
        (0x060 => pub gerror: ReadOnly<u32, GERROR::Register>),
        (0x064 => pub gerrorn: ReadWrite<u32, GERROR::Register>),
        (0x068 => pub gerror_irq_cfg0: ReadWrite<u64, IRQ_CFG0::Register>),
        (0x070 => pub gerror_irq_cfg1: ReadWrite<u32>),
        (0x074 => pub gerror_irq_cfg2: ReadWrite<u32, IRQ_CFG2::Register>),
        (0x078 => _reserved3),
        (0x080 => pub strtab_base: ReadWrite<u64, STRTAB_BASE::Register>),
        (0x088 => pub strtab_base_cfg: ReadWrite<u32, STRTAB_BASE_CFG::Register>),
        (0x08C => _reserved4),
        (0x090 => pub cmdq_base: ReadWrite<u64, Q_BASE::Register>),
        (0x098 => pub cmdq_prod: ReadWrite<u32, Q_PROD::Register>),
        (0x09C => pub cmdq_cons: ReadWrite<u32, Q_CONS::Register>),
        (0x0A0 => pub eventq_base: ReadWrite<u64, Q_BASE::Register>),
        // 0xA8/0xAC: EVENTQ_PROD/CONS live on page 1.
        (0x0A8 => _reserved5),
        (0x0B0 => pub eventq_irq_cfg0: ReadWrite<u64, IRQ_CFG0::Register>),
        (0x0B8 => pub eventq_irq_cfg1: ReadWrite<u32>),
        (0x0BC => pub eventq_irq_cfg2: ReadWrite<u32, IRQ_CFG2::Register>),
        (0x0C0 => pub priq_base: ReadWrite<u64, Q_BASE::Register>),
        (0x0C8 => _reserved6),
        (0x0D0 => pub priq_irq_cfg0: ReadWrite<u64, IRQ_CFG0::Register>),
        (0x0D8 => pub priq_irq_cfg1: ReadWrite<u32>),
        (0x0DC => pub priq_irq_cfg2: ReadWrite<u32, IRQ_CFG2::Register>),
        (0x0E0 => @END),
    }
}

register_structs! {
    /// SMMUv3 register page 1 (at page 0 + 64 KiB).
    pub SmmuPage1 {
        (0x000 => _reserved0),
        (0x0A8 => pub eventq_prod: ReadWrite<u32, Q_PROD::Register>),
        (0x0AC => pub eventq_cons: ReadWrite<u32, Q_CONS::Register>),
        (0x0B0 => _reserved1),
        (0x0C8 => pub priq_prod: ReadWrite<u32, Q_PROD::Register>),
        (0x0CC => pub priq_cons: ReadWrite<u32, Q_CONS::Register>),
        (0x0D0 => @END),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;
    use tock_registers::LocalRegisterCopy;

    #[test]
    fn page0_offsets_match_the_architecture() {
        assert_eq!(offset_of!(SmmuPage0, idr0), 0x00);
        assert_eq!(offset_of!(SmmuPage0, idr5), 0x14);
        assert_eq!(offset_of!(SmmuPage0, aidr), 0x1C);
        assert_eq!(offset_of!(SmmuPage0, cr0), 0x20);
        assert_eq!(offset_of!(SmmuPage0, cr0ack), 0x24);
        assert_eq!(offset_of!(SmmuPage0, cr2), 0x2C);
        assert_eq!(offset_of!(SmmuPage0, gbpa), 0x44);
        assert_eq!(offset_of!(SmmuPage0, irq_ctrl), 0x50);
        assert_eq!(offset_of!(SmmuPage0, gerror), 0x60);
        assert_eq!(offset_of!(SmmuPage0, gerrorn), 0x64);
        assert_eq!(offset_of!(SmmuPage0, strtab_base), 0x80);
        assert_eq!(offset_of!(SmmuPage0, strtab_base_cfg), 0x88);
        assert_eq!(offset_of!(SmmuPage0, cmdq_base), 0x90);
        assert_eq!(offset_of!(SmmuPage0, cmdq_prod), 0x98);
        assert_eq!(offset_of!(SmmuPage0, cmdq_cons), 0x9C);
        assert_eq!(offset_of!(SmmuPage0, eventq_base), 0xA0);
        assert_eq!(offset_of!(SmmuPage0, eventq_irq_cfg0), 0xB0);
    }

    #[test]
    fn page1_offsets_match_the_architecture() {
        assert_eq!(PAGE_SIZE + offset_of!(SmmuPage1, eventq_prod), 0x1_00A8);
        assert_eq!(PAGE_SIZE + offset_of!(SmmuPage1, eventq_cons), 0x1_00AC);
        assert_eq!(PAGE_SIZE + offset_of!(SmmuPage1, priq_prod), 0x1_00C8);
    }

    #[test]
    fn qemu_virt_idr0_decodes() {
        // IDR0 of QEMU's virt SMMU (9.2+): nested, AArch64-only tables, COHACC, 2-level.
        let idr0 = LocalRegisterCopy::<u32, IDR0::Register>::new(0x0D44_101B);
        assert!(idr0.is_set(IDR0::S1P) && idr0.is_set(IDR0::S2P));
        assert_eq!(
            idr0.read_as_enum(IDR0::TTF),
            Some(IDR0::TTF::Value::Aarch64)
        );
        assert!(idr0.is_set(IDR0::COHACC));
        assert!(idr0.is_set(IDR0::ASID16) && idr0.is_set(IDR0::VMID16));
        assert_eq!(idr0.read(IDR0::ST_LEVEL), 1);
        assert_eq!(idr0.read(IDR0::TTENDIAN), 2);
        assert_eq!(idr0.read(IDR0::STALL_MODEL), 1);
    }

    #[test]
    fn field_positions() {
        assert_eq!(CR0::CMDQEN.mask << CR0::CMDQEN.shift, 1 << 3);
        assert_eq!(GBPA::UPDATE.mask << GBPA::UPDATE.shift, 1 << 31);
        assert_eq!(GBPA::ABORT.mask << GBPA::ABORT.shift, 1 << 20);
        assert_eq!(Q_CONS::ERR.mask << Q_CONS::ERR.shift, 0x7F00_0000);
        assert_eq!(STRTAB_BASE_CFG::FMT::TwoLevel.value, 1 << 16);
        assert_eq!(STRTAB_BASE_CFG::SPLIT.val(8).value, 8 << 6);
        assert_eq!(
            STRTAB_BASE::ADDR.mask << STRTAB_BASE::ADDR.shift,
            0x000F_FFFF_FFFF_FFC0
        );
        assert_eq!(
            Q_BASE::ADDR.mask << Q_BASE::ADDR.shift,
            0x000F_FFFF_FFFF_FFE0
        );
        assert_eq!(CR1::TABLE_SH::Inner.value, 3 << 10);
        assert_eq!(IDR1::CMDQS.mask << IDR1::CMDQS.shift, 0x03E0_0000);
        assert_eq!(IDR3::RIL.mask << IDR3::RIL.shift, 1 << 10);
    }
}
