//! Enables the assembly kernels of `kernel/arm.rs` on Armv7E-M with the
//! hardware FPU (Cortex-M4F/M7F: single-precision VFP and the DSP
//! extension). Every other target builds the safe kernels only.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(polyak_m4f)");
    println!("cargo:rerun-if-env-changed=TARGET");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em-") && target.ends_with("eabihf") {
        println!("cargo:rustc-cfg=polyak_m4f");
    }
}
