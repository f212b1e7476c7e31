//! A small seeded generator (SplitMix64): deterministic on every target.

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator's state (to save it).
    pub const fn state(&self) -> u64 {
        self.0
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform `i16` (all 65536 values).
    pub fn next_i16(&mut self) -> i16 {
        (self.next_u64() >> 48) as u16 as i16
    }

    /// A uniform f32 in `[-1, 1)` on a grid of 2⁻²³ (exact conversion).
    pub fn uniform(&mut self) -> f32 {
        let v = (self.next_u64() >> 40) as i32 - (1 << 23);
        v as f32 * (1.0 / 8_388_608.0)
    }
}
