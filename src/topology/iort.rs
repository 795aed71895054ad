//! ACPI IORT (placeholder).
