//! The portable half of the firmware example: a simulated I2C sensor, a
//! driver generic over `embedded_hal::i2c::I2c`, and an online-SGD training
//! run that keeps several weight averages with `polyak`.
//!
//! The same code runs on the Cortex-M (from `main.rs`) and on the host,
//! where the test suite recomputes the device's run and compares checksums
//! of every averaged buffer bit for bit.
#![no_std]

pub mod bench;
pub mod rng;
pub mod sensor;
pub mod train;

/// FNV-1a (32-bit) over a sequence of 32-bit words, little-endian bytes.
pub fn fnv1a(words: impl IntoIterator<Item = u32>) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}
