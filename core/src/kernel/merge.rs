//! Weighted-average and interpolation loops.
//!
//! The weighted sum runs over blocks of `BLOCK` elements with the
//! accumulators on the stack, model by model inside a block, so each model is
//! read sequentially and the accumulators stay in registers or L1.

use core::num::NonZeroU64;

use super::swa::comp_add;
use crate::format::CompF32;
use crate::num::{div_round_i64, round_shift_i64};

/// Elements per accumulator block (512 bytes of `CompF32` on the stack).
const BLOCK: usize = 64;

/// `out[i] = fl(Σ_k fl(w_k·scale·x_k[i]) / total)`, the sum compensated.
/// `scale` is a power of two chosen by the caller so that the scaled
/// weights sum to `total ∈ [1, 2)`.
pub(crate) fn weighted_f32(
    models: &[&[f32]],
    weights: impl Iterator<Item = f32> + Clone,
    scale: f32,
    total: f32,
    out: &mut [f32],
) {
    for (b, o) in out.chunks_mut(BLOCK).enumerate() {
        let start = b * BLOCK;
        let end = start + o.len();
        let mut acc = [CompF32::ZERO; BLOCK];
        for (m, w) in models.iter().zip(weights.clone()) {
            let w = w * scale;
            if let Some(x) = m.get(start..end) {
                for (a, &x) in acc.iter_mut().zip(x) {
                    *a = comp_add(*a, w * x);
                }
            }
        }
        for (o, a) in o.iter_mut().zip(&acc) {
            *o = a.value() / total;
        }
    }
}

/// `out[i] = round(Σ_k w_k·x_k[i] / total)`, exact sum, nearest-even.
/// The caller guarantees `Σ w_k ≤ 2^32 − 1`, so the i64 sum cannot overflow
/// for inputs of at most 32 bits.
pub(crate) fn weighted_fixed<T: Copy>(
    models: &[&[T]],
    weights: &[u32],
    total: NonZeroU64,
    out: &mut [T],
    bits: impl Fn(T) -> i64,
    from_bits: impl Fn(i64) -> T,
) {
    for (b, o) in out.chunks_mut(BLOCK).enumerate() {
        let start = b * BLOCK;
        let end = start + o.len();
        let mut acc = [0i64; BLOCK];
        for (m, &w) in models.iter().zip(weights) {
            let w = i64::from(w);
            if let Some(x) = m.get(start..end) {
                for (a, &x) in acc.iter_mut().zip(x) {
                    *a += w * bits(x);
                }
            }
        }
        for (o, &a) in o.iter_mut().zip(&acc) {
            *o = from_bits(div_round_i64(a, total));
        }
    }
}

/// `a + t·(b − a)` for `t ≤ 1/2`, else `b − (1 − t)·(b − a)`: exact at both
/// ends (`t = 0` gives `a`, `t = 1` gives `b`, bit for bit), and `1 − t` is exact for
/// `t ∈ [1/2, 1]`.
pub(crate) fn lerp_f32(a: &[f32], b: &[f32], t: f32, out: &mut [f32]) {
    // Start the vector loop on a cache line of `out` (a layer of a layout
    // rarely starts on one): the few elements before it go one by one.
    let head = out.as_ptr().align_offset(64).min(out.len());
    let (a0, a1) = a.split_at(head.min(a.len()));
    let (b0, b1) = b.split_at(head.min(b.len()));
    let (o0, o1) = out.split_at_mut(head);
    lerp_f32_body(a0, b0, t, o0);
    lerp_f32_body(a1, b1, t, o1);
}

fn lerp_f32_body(a: &[f32], b: &[f32], t: f32, out: &mut [f32]) {
    let triples = out.iter_mut().zip(a.iter().zip(b));
    // The ends are copies: the formulas below would turn −0.0 into +0.0.
    if t == 0.0 {
        for (o, (&a, _)) in triples {
            *o = a;
        }
    } else if t == 1.0 {
        for (o, (_, &b)) in triples {
            *o = b;
        }
    } else if t <= 0.5 {
        for (o, (&a, &b)) in triples {
            *o = a + t * (b - a);
        }
    } else {
        let u = 1.0 - t;
        for (o, (&a, &b)) in triples {
            *o = b - u * (b - a);
        }
    }
}

/// `round((a·(2^31 − t) + b·t) / 2^31)` with `t ∈ [0, 2^31]` a Q31 fraction;
/// exact in i64 for inputs of at most 32 bits, then nearest-even.
pub(crate) fn lerp_fixed<T: Copy>(
    a: &[T],
    b: &[T],
    t: i64,
    out: &mut [T],
    bits: impl Fn(T) -> i64,
    from_bits: impl Fn(i64) -> T,
) {
    let u = (1i64 << 31) - t;
    for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = from_bits(round_shift_i64::<31>(bits(a) * u + bits(b) * t));
    }
}
