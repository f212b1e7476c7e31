//! proptest strategies for kernel inputs.
//!
//! The f32 strategies mix ordinary magnitudes with the corners: zeros of
//! both signs, subnormals, values near 1, and large magnitudes up to
//! [`polyak::F32_LIMIT`]. The fixed-point ones cover the whole range,
//! including −1 and the largest value below 1.

use fixed::types::{I1F15, I1F31};
use proptest::prelude::*;

/// One f32 in the accepted input range, weighted towards ordinary values
/// but reaching every corner.
pub fn f32_value() -> impl Strategy<Value = f32> {
    let limit = polyak::F32_LIMIT;
    prop_oneof![
        6 => -4.0f32..4.0,
        2 => -1.0f32..1.0,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => (1u32..(1 << 23)).prop_map(f32::from_bits),
        1 => (1u32..(1 << 23)).prop_map(|b| -f32::from_bits(b)),
        1 => -limit..=limit,
        1 => prop_oneof![Just(limit), Just(-limit)],
        1 => -1.0e-30f32..1.0e-30,
    ]
}

/// A buffer of `len` f32 values drawn from a single magnitude regime per
/// buffer (so bounds relative to the largest element stay meaningful) or
/// from [`f32_value`] for mixed buffers.
pub fn f32_buffer(len: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(f32_value(), len)
}

/// A scale and a length: buffers are then drawn as `scale · u` with `u` in
/// `[-1, 1)`, to test the same step at very different magnitudes.
pub fn f32_scale() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => Just(1.0f32),
        1 => Just(1.0e-40f32),
        1 => Just(1.0e-20f32),
        1 => Just(1.0e20f32),
        1 => Just(polyak::F32_LIMIT),
        1 => 1.0e-3f32..1.0e3,
    ]
}

/// Any Q15 value, with −1 and the largest value weighted up.
pub fn q15_value() -> impl Strategy<Value = I1F15> {
    prop_oneof![
        8 => any::<i16>().prop_map(I1F15::from_bits),
        1 => Just(I1F15::MIN),
        1 => Just(I1F15::MAX),
    ]
}

/// Any Q31 value, with −1 and the largest value weighted up.
pub fn q31_value() -> impl Strategy<Value = I1F31> {
    prop_oneof![
        8 => any::<i32>().prop_map(I1F31::from_bits),
        1 => Just(I1F31::MIN),
        1 => Just(I1F31::MAX),
    ]
}

/// A decay β in `[0.5, 0.99999]`, log-uniform in `1 − β`.
pub fn beta() -> impl Strategy<Value = f32> {
    (0.0f64..1.0).prop_map(|u| {
        let alpha = 0.5 * (1e-5f64 / 0.5).powf(u);
        (1.0 - alpha) as f32
    })
}

/// A proptest configuration with `cases` cases (multiplied by the
/// environment variable `POLYAK_PROPTEST_SCALE`, default 1, for longer
/// soak runs) and no failure-persistence files.
pub fn config(cases: u32) -> ProptestConfig {
    let scale = std::env::var("POLYAK_PROPTEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    ProptestConfig {
        cases: cases.saturating_mul(scale),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A random split of `0..n` into chunks, in a random order: chunk sizes
/// from 1 to `n` (many small ones, some large), then shuffled. Derived
/// from `seed` with splitmix64, so a failing case replays.
pub fn chunking(n: usize, seed: u64) -> Vec<std::ops::Range<usize>> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = Vec::new();
    let mut at = 0;
    // a typical chunk size for this case: 1, a few, or most of the buffer
    let scale = match next() % 3 {
        0 => 1,
        1 => 4,
        _ => n.max(1),
    };
    while at < n {
        let len = (1 + (next() as usize) % scale).min(n - at);
        out.push(at..at + len);
        at += len;
    }
    for i in (1..out.len()).rev() {
        let j = (next() as usize) % (i + 1);
        out.swap(i, j);
    }
    out
}
