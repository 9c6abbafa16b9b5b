//! Links `holdpoint` as a position-dependent executable on Linux. The
//! runner starts once for every command an agent runs; as a PIE, the dynamic
//! loader applied some 25,000 relative relocations at every start (a quarter
//! of the instructions before the verdict) and wrote 430 KB of relocated
//! read-only data, a hundred page faults. Linked at a fixed address the
//! linker resolves them once.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=holdpoint=-no-pie");
    }
}
