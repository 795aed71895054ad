//! ACPI tables as QEMU publishes them through fw_cfg, before any firmware
//! linked them: `etc/acpi/rsdp` and `etc/acpi/tables`, in which every
//! pointer (RSDP -> XSDT -> each table) still holds an offset into
//! `etc/acpi/tables`, and every checksum byte is 0 until the commands of
//! `etc/table-loader` are run. [`find_unlinked_table`] follows the
//! offsets; [`apply_loader_checksums`] computes the checksums the loader
//! would. Both are pure and bounds-checked: no input bytes make them panic.

use core::fmt;

/// Why a table could not be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// The RSDP does not start with `RSD PTR `.
    NoRsdp,
    /// The RSDP is too short to hold an XSDT address (revision 0).
    NoXsdtAddress,
    /// The XSDT offset, or the length in its header, is outside the tables.
    XsdtOutside {
        /// The RSDP's XSDT offset.
        offset: u64,
    },
    /// The XSDT offset does not lead to an `XSDT` header.
    NoXsdt,
    /// No XSDT entry leads to a table with this signature.
    NoTable([u8; 4]),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRsdp => f.write_str("no RSDP signature"),
            Self::NoXsdtAddress => f.write_str("the RSDP has no XSDT address"),
            Self::XsdtOutside { offset } => write!(f, "XSDT at {offset:#x} is outside the tables"),
            Self::NoXsdt => f.write_str("no XSDT signature at the RSDP's XSDT offset"),
            Self::NoTable(sig) => write!(f, "no table {sig:02x?} in the XSDT"),
        }
    }
}

impl core::error::Error for AcpiError {}

/// Length of a fw_cfg file name in a loader command.
const NAME_LEN: usize = 56;

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// `etc/table-loader` commands are 128 bytes; ADD_CHECKSUM is command 3:
/// file name (56 bytes), checksum offset, start, length (u32 each, LE).
const LOADER_COMMAND_LEN: usize = 128;
const LOADER_ADD_CHECKSUM: u32 = 3;

/// Applies the table loader's ADD_CHECKSUM commands for `file` to `blob`:
/// QEMU leaves every table's checksum byte 0 for firmware to compute.
/// (Pointers are left as offsets, so a table holding pointers gets the
/// checksum of its unlinked bytes; the IORT holds none.) Returns the number
/// of checksums written; commands out of bounds are skipped.
pub fn apply_loader_checksums(loader: &[u8], file: &str, blob: &mut [u8]) -> usize {
    let mut done = 0;
    for cmd in loader.chunks_exact(LOADER_COMMAND_LEN) {
        if le32(cmd, 0) != Some(LOADER_ADD_CHECKSUM) {
            continue;
        }
        let name = &cmd[4..4 + NAME_LEN];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN)];
        if name != file.as_bytes() {
            continue;
        }
        let field = |at| le32(cmd, at).map(|v| v as usize);
        let (Some(at), Some(start), Some(len)) = (field(60), field(64), field(68)) else {
            continue;
        };
        let in_range = at < blob.len() && start.checked_add(len).is_some_and(|e| e <= blob.len());
        if !in_range {
            continue;
        }
        blob[at] = 0;
        let sum = blob[start..start + len]
            .iter()
            .fold(0u8, |s, &b| s.wrapping_add(b));
        blob[at] = 0u8.wrapping_sub(sum);
        done += 1;
    }
    done
}

/// The table with signature `sig` in the unlinked `tables` blob, found
/// through the RSDP's XSDT offset and the XSDT's entries (offsets into
/// `tables`, as QEMU leaves them for its table loader).
pub fn find_unlinked_table<'a>(
    rsdp: &[u8],
    tables: &'a [u8],
    sig: [u8; 4],
) -> Result<&'a [u8], AcpiError> {
    if rsdp.get(..8) != Some(b"RSD PTR ") {
        return Err(AcpiError::NoRsdp);
    }
    let xsdt_at = le64(rsdp, 24).ok_or(AcpiError::NoXsdtAddress)?;
    let table_at = |at: u64| -> Option<&'a [u8]> {
        let at = usize::try_from(at).ok()?;
        let len = le32(tables, at.checked_add(4)?)? as usize;
        tables.get(at..at.checked_add(len)?)
    };
    let xsdt = table_at(xsdt_at).ok_or(AcpiError::XsdtOutside { offset: xsdt_at })?;
    if xsdt.get(..4) != Some(b"XSDT") {
        return Err(AcpiError::NoXsdt);
    }
    let entries = xsdt.get(36..).unwrap_or_default();
    entries
        .chunks_exact(8)
        .filter_map(|e| table_at(u64::from_le_bytes(e.try_into().ok()?)))
        .find(|t| t.get(..4) == Some(&sig[..]))
        .ok_or(AcpiError::NoTable(sig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// An ACPI header with `sig` and `len` (other fields 0).
    fn header(sig: &[u8; 4], len: u32) -> Vec<u8> {
        let mut t = Vec::from(&sig[..]);
        t.extend_from_slice(&len.to_le_bytes());
        t.resize(36, 0);
        t
    }

    /// tables = [DSDT-ish filler][APIC][IORT][XSDT -> APIC, IORT]; the
    /// RSDP's XSDT address is the XSDT's offset.
    fn blobs() -> (Vec<u8>, Vec<u8>, usize) {
        let mut tables = header(b"DSDT", 40);
        tables.resize(40, 0xee);
        let apic = tables.len();
        tables.extend(header(b"APIC", 44));
        tables.resize(apic + 44, 0x11);
        let iort = tables.len();
        tables.extend(header(b"IORT", 48));
        tables.resize(iort + 48, 0x22);
        let xsdt = tables.len();
        tables.extend(header(b"XSDT", 36 + 16));
        tables.extend((apic as u64).to_le_bytes());
        tables.extend((iort as u64).to_le_bytes());
        let mut rsdp = Vec::from(&b"RSD PTR "[..]);
        rsdp.resize(24, 0);
        rsdp.extend((xsdt as u64).to_le_bytes());
        rsdp.resize(36, 0);
        (rsdp, tables, iort)
    }

    #[test]
    fn tables_are_found_through_the_xsdt_offsets() {
        let (rsdp, tables, iort) = blobs();
        let t = find_unlinked_table(&rsdp, &tables, *b"IORT").unwrap();
        assert_eq!(t.as_ptr(), tables[iort..].as_ptr());
        assert_eq!(t.len(), 48);
        assert_eq!(
            find_unlinked_table(&rsdp, &tables, *b"APIC").map(|t| t.len()),
            Ok(44)
        );
        // The DSDT is not in the XSDT (the FADT points at it).
        assert_eq!(
            find_unlinked_table(&rsdp, &tables, *b"DSDT"),
            Err(AcpiError::NoTable(*b"DSDT"))
        );
        assert_eq!(
            find_unlinked_table(&rsdp[..8], &tables, *b"IORT"),
            Err(AcpiError::NoXsdtAddress)
        );
        assert_eq!(
            find_unlinked_table(&tables, &tables, *b"IORT"),
            Err(AcpiError::NoRsdp)
        );
        let mut bad = rsdp.clone();
        bad[24..32].copy_from_slice(&(tables.len() as u64).to_le_bytes());
        assert!(matches!(
            find_unlinked_table(&bad, &tables, *b"IORT"),
            Err(AcpiError::XsdtOutside { .. })
        ));
        bad[24..32].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            find_unlinked_table(&bad, &tables, *b"IORT"),
            Err(AcpiError::NoXsdt)
        );
    }

    fn checksum_command(file: &[u8], at: u32, start: u32, len: u32) -> Vec<u8> {
        let mut c = Vec::from(3u32.to_le_bytes());
        c.extend_from_slice(file);
        c.resize(60, 0);
        for v in [at, start, len] {
            c.extend(v.to_le_bytes());
        }
        c.resize(128, 0);
        c
    }

    #[test]
    fn loader_checksums_make_tables_sum_to_zero() {
        let (_, mut tables, iort) = blobs();
        let mut loader = checksum_command(b"etc/acpi/tables", iort as u32 + 9, iort as u32, 48);
        // Another file's command, an out-of-range one, and an ALLOCATE.
        loader.extend(checksum_command(b"etc/acpi/rsdp", 8, 0, 20));
        loader.extend(checksum_command(b"etc/acpi/tables", 9, 0, u32::MAX));
        let mut alloc_cmd = checksum_command(b"etc/acpi/tables", 0, 0, 4);
        alloc_cmd[0] = 1;
        loader.extend(alloc_cmd);
        assert_eq!(
            apply_loader_checksums(&loader, "etc/acpi/tables", &mut tables),
            1
        );
        let sum = tables[iort..iort + 48]
            .iter()
            .fold(0u8, |s, &b| s.wrapping_add(b));
        assert_eq!(sum, 0);
        assert_ne!(tables[iort + 9], 0);
    }

    proptest! {
        #[test]
        fn no_input_panics(
            rsdp in proptest::collection::vec(any::<u8>(), 0..48),
            mut tables in proptest::collection::vec(any::<u8>(), 0..300),
            loader in proptest::collection::vec(any::<u8>(), 0..400),
            xsdt_at in 0u64..320,
        ) {
            let mut rsdp = rsdp;
            if rsdp.len() >= 32 {
                rsdp[..8].copy_from_slice(b"RSD PTR ");
                rsdp[24..32].copy_from_slice(&xsdt_at.to_le_bytes());
            }
            let _ = find_unlinked_table(&rsdp, &tables, *b"IORT");
            let _ = apply_loader_checksums(&loader, "etc/acpi/tables", &mut tables);
        }
    }
}
