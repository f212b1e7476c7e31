//! Picks the memory layout of the QEMU board for the target being built:
//! MPS2-AN386 (Cortex-M4F) or the micro:bit (Cortex-M0). Host builds of the
//! library need nothing.

use std::env;
use std::fs;
use std::path::PathBuf;

const MPS2_AN386: &str = "MEMORY
{
  /* MPS2 AN386: 4 MiB code SSRAM at 0, 4 MiB data SSRAM at 0x2000_0000 */
  FLASH : ORIGIN = 0x00000000, LENGTH = 4M
  RAM   : ORIGIN = 0x20000000, LENGTH = 4M
}
";

const MICROBIT: &str = "MEMORY
{
  /* nRF51822 on the BBC micro:bit: 256 KiB flash, 16 KiB RAM */
  FLASH : ORIGIN = 0x00000000, LENGTH = 256K
  RAM   : ORIGIN = 0x20000000, LENGTH = 16K
}
";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = env::var("TARGET").unwrap_or_default();
    let board = if target.starts_with("thumbv6m") {
        Some(("microbit", MICROBIT))
    } else if target.starts_with("thumbv7em") {
        Some(("mps2_an386", MPS2_AN386))
    } else {
        None
    };
    if let Some((name, memory)) = board {
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        fs::write(out.join("memory.x"), memory).expect("write memory.x");
        println!("cargo:rustc-link-search={}", out.display());
        println!("cargo:rustc-cfg=board=\"{name}\"");
    }
}
