//! Scalar building blocks shared by the kernels: error-free transformations
//! for f32 and correctly rounded integer scaling for fixed point.
//!
//! Everything here is `#[inline(always)]`, branch-free where it matters, and
//! cannot panic: no slice indexing, no division by a value that may be zero,
//! no arithmetic that can overflow for the documented argument ranges.

use core::num::NonZeroU64;

/// Error-free sum (Knuth's TwoSum): `s + e == a + b` exactly, with
/// `s = fl(a + b)`, for any finite `a`, `b` whose sum does not overflow.
#[inline(always)]
pub(crate) fn two_sum(a: f32, b: f32) -> (f32, f32) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// `round(v / 2^SHIFT)` to nearest, ties to even, for any `v`.
#[inline(always)]
pub(crate) fn round_shift_i64<const SHIFT: u32>(v: i64) -> i64 {
    let q = v >> SHIFT;
    let r = v & ((1i64 << SHIFT) - 1);
    let half = 1i64 << (SHIFT - 1);
    q + i64::from((r > half) | ((r == half) & (q & 1 != 0)))
}

/// `round(v / 2^SHIFT)` to nearest, ties to even, for any `v`.
#[inline(always)]
pub(crate) fn round_shift_i128<const SHIFT: u32>(v: i128) -> i128 {
    let q = v >> SHIFT;
    let r = v & ((1i128 << SHIFT) - 1);
    let half = 1i128 << (SHIFT - 1);
    q + i128::from((r > half) | ((r == half) & (q & 1 != 0)))
}

/// `round(n / d)` to nearest, ties to even (symmetric in the sign of `n`).
///
/// The divisor is a `NonZeroU64`, so the division has no panic path.
#[inline]
pub(crate) fn div_round_i64(n: i64, d: NonZeroU64) -> i64 {
    let m = n.unsigned_abs();
    let q = m / d;
    let r = m % d;
    let rest = d.get() - r;
    let up = (r > rest) | ((r == rest) & (q & 1 != 0));
    let q = q + u64::from(up);
    // |n| / d rounded is at most |n|, which fits in i64 except for
    // n = i64::MIN, d = 1, where the wrapping negation gives the exact result.
    let q = q as i64;
    if n < 0 { q.wrapping_neg() } else { q }
}

/// `round(n / d)` to nearest, ties to even (symmetric in the sign of `n`),
/// in 128 bits.
#[inline]
pub(crate) fn div_round_i128(n: i128, d: core::num::NonZeroU128) -> i128 {
    let m = n.unsigned_abs();
    let q = m / d;
    let r = m % d;
    let rest = d.get() - r;
    let up = (r > rest) | ((r == rest) & (q & 1 != 0));
    let q = (q + u128::from(up)) as i128;
    if n < 0 { q.wrapping_neg() } else { q }
}

/// `round(v / 2^shift)` to nearest, ties to even, for a run-time shift in
/// `1..=126`.
#[inline]
pub(crate) fn round_shift_var_i128(v: i128, shift: u32) -> i128 {
    let shift = shift.max(1).min(126);
    let q = v >> shift;
    let r = v & ((1i128 << shift) - 1);
    let half = 1i128 << (shift - 1);
    q + i128::from((r > half) | ((r == half) & (q & 1 != 0)))
}

/// How an increment `p / 2³¹` is rounded to an integer.
pub(crate) trait Round {
    /// `p / 2³¹` rounded.
    fn r64(&mut self, p: i64) -> i64;
    /// `p / 2³¹` rounded.
    fn r128(&mut self, p: i128) -> i128;
}

/// Round to nearest, ties to even.
pub(crate) struct Nearest;

impl Round for Nearest {
    #[inline(always)]
    fn r64(&mut self, p: i64) -> i64 {
        round_shift_i64::<31>(p)
    }
    #[inline(always)]
    fn r128(&mut self, p: i128) -> i128 {
        round_shift_i128::<31>(p)
    }
}

/// Stochastic rounding: up with probability equal to the fraction, from a
/// xorshift32 generator (Marsaglia 2003) whose state the caller keeps.
pub(crate) struct Stochastic<'a>(pub(crate) &'a mut u32);

impl Stochastic<'_> {
    /// 31 uniform bits.
    #[inline(always)]
    fn next31(&mut self) -> u32 {
        let x = xorshift32(*self.0);
        *self.0 = x;
        x >> 1
    }
}

/// One xorshift32 step (13, 17, 5), as [`Stochastic`] draws.
#[inline(always)]
const fn xorshift32(mut x: u32) -> u32 {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x
}

/// The xorshift32 state `n` draws after `state`, in O(32²·log n): the
/// generator is linear over GF(2), so its `n`-th power is a 32 × 32 bit
/// matrix, squared up from the one-step matrix. A chunk of an update that
/// starts `n` draws into the step picks up the same random numbers as the
/// whole-buffer pass would.
pub(crate) fn xorshift32_jump(state: u32, mut n: u64) -> u32 {
    // column i of the current power: the image of bit i
    let mut cols = [0u32; 32];
    for (i, c) in cols.iter_mut().enumerate() {
        *c = xorshift32(1 << i);
    }
    let apply = |cols: &[u32; 32], v: u32| {
        let mut out = 0;
        for (i, c) in cols.iter().enumerate() {
            if v >> i & 1 != 0 {
                out ^= c;
            }
        }
        out
    };
    let mut v = state;
    while n != 0 {
        if n & 1 != 0 {
            v = apply(&cols, v);
        }
        n >>= 1;
        if n != 0 {
            let sq = cols;
            for c in cols.iter_mut() {
                *c = apply(&sq, *c);
            }
        }
    }
    v
}

impl Round for Stochastic<'_> {
    #[inline(always)]
    fn r64(&mut self, p: i64) -> i64 {
        let frac = (p & 0x7fff_ffff) as u32;
        (p >> 31) + i64::from(self.next31() < frac)
    }
    #[inline(always)]
    fn r128(&mut self, p: i128) -> i128 {
        let frac = (p & 0x7fff_ffff) as u32;
        (p >> 31) + i128::from(self.next31() < frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sum_is_exact() {
        let cases = [
            (1.0f32, 1e-10f32),
            (1e30, -1e30),
            (3.0, f32::EPSILON / 4.0),
            (-0.1, 0.3),
        ];
        for (a, b) in cases {
            let (s, e) = two_sum(a, b);
            assert_eq!(f64::from(s) + f64::from(e), f64::from(a) + f64::from(b));
        }
    }

    #[test]
    fn shifts_round_half_to_even() {
        // 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, 2.25 -> 2, 2.75 -> 3
        assert_eq!(round_shift_i64::<2>(10), 2);
        assert_eq!(round_shift_i64::<2>(14), 4);
        assert_eq!(round_shift_i64::<2>(-10), -2);
        assert_eq!(round_shift_i64::<2>(9), 2);
        assert_eq!(round_shift_i64::<2>(11), 3);
        assert_eq!(round_shift_i64::<2>(-11), -3);
        assert_eq!(round_shift_i128::<2>(-14), -4);
        assert_eq!(round_shift_i128::<2>(-9), -2);
    }

    #[test]
    fn variable_shift_rounds_half_to_even() {
        assert_eq!(round_shift_var_i128(10, 2), 2);
        assert_eq!(round_shift_var_i128(14, 2), 4);
        assert_eq!(round_shift_var_i128(-10, 2), -2);
        assert_eq!(round_shift_var_i128(11, 2), 3);
        assert_eq!(round_shift_var_i128(1 << 40, 40), 1);
    }

    #[test]
    fn stochastic_rounding_is_unbiased_and_bounded() {
        let mut state = 0x1234_5678u32;
        let mut r = Stochastic(&mut state);
        // 0.25 in units of 2^31
        let p = 1i64 << 29;
        let n = 100_000;
        let ups: i64 = (0..n).map(|_| r.r64(p)).sum();
        // Binomial(n, 1/4): mean 25000, sd 137
        assert!((ups - n / 4).abs() < 1000, "{ups}");
        assert!((0..1000).all(|_| (0..=1).contains(&r.r64(p))));
        assert_eq!(r.r64(3 << 31), 3);
        assert!((0..1000).all(|_| (-1..=0).contains(&r.r128(-(1i128 << 29)))));
    }

    #[test]
    fn xorshift_jump_matches_stepping() {
        let mut x = 0x1234_5678u32;
        for n in 0..300u64 {
            assert_eq!(xorshift32_jump(0x1234_5678, n), x);
            x = xorshift32(x);
        }
        let mut y = 7u32;
        for _ in 0..100_000 {
            y = xorshift32(y);
        }
        assert_eq!(xorshift32_jump(7, 100_000), y);
    }

    #[test]
    fn division_rounds_half_to_even() {
        let d = |v| NonZeroU64::new(v).unwrap();
        assert_eq!(div_round_i64(5, d(2)), 2);
        assert_eq!(div_round_i64(7, d(2)), 4);
        assert_eq!(div_round_i64(-5, d(2)), -2);
        assert_eq!(div_round_i64(-7, d(2)), -4);
        assert_eq!(div_round_i64(10, d(3)), 3);
        assert_eq!(div_round_i64(11, d(3)), 4);
        assert_eq!(div_round_i64(i64::MIN, d(1)), i64::MIN);
        assert_eq!(div_round_i64(i64::MAX, d(1)), i64::MAX);
    }
}
