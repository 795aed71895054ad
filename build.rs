//! Links the EL2 image, the on-target test images and the bootable
//! examples with `linker.ld`.
//! The library itself is never linked with it.
fn main() {
    println!("cargo::rerun-if-changed=linker.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        println!("cargo::rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo::rustc-link-arg-tests=-T{dir}/linker.ld");
        println!("cargo::rustc-link-arg-examples=-T{dir}/linker.ld");
        // Identical code folding: monomorphised copies that compiled to the
        // same instructions (Vec drops, `<&T as Display>::fmt` thunks, ...)
        // are kept once.
        println!("cargo::rustc-link-arg-bins=--icf=all");
        println!("cargo::rustc-link-arg-tests=--icf=all");
        println!("cargo::rustc-link-arg-examples=--icf=all");
    }
}
