//! The Cortex-M firmware (work in progress on the host build).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is firmware: build it for thumbv7em-none-eabihf, or run `cargo xtask demo`");
    std::process::exit(2);
}
