//! Double-double arithmetic: a value `hi + lo` carried in two f64s, about
//! 106 significant bits.
//!
//! The references that the tests compare f32 results against are computed
//! in this precision where plain f64 would itself err by more than a tiny
//! fraction of the bound under test (long recurrences, sums with
//! cancellation, variances of values with a large common offset). Its own
//! error, about 2⁻¹⁰⁰ relative per operation, is far below anything an f32
//! or Q15 bound can resolve, so the bounds are asserted with no allowance
//! for the reference.
//!
//! The operations are the classical error-free transformations: Knuth's
//! TwoSum for sums and the fused multiply-add for exact products.

use core::ops::{Add, Div, Mul, Neg, Sub};

/// `hi + lo`, with `|lo| ≤ ulp(hi)/2`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Dd {
    hi: f64,
    lo: f64,
}

/// `(s, e)` with `s = fl(a + b)` and `s + e = a + b` exactly.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// `(p, e)` with `p = fl(a·b)` and `p + e = a·b` exactly.
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

impl Dd {
    /// Zero.
    pub const ZERO: Dd = Dd { hi: 0.0, lo: 0.0 };

    fn norm(hi: f64, lo: f64) -> Dd {
        let (hi, lo) = two_sum(hi, lo);
        Dd { hi, lo }
    }

    /// The value rounded to f64.
    pub fn to_f64(self) -> f64 {
        self.hi + self.lo
    }

    /// `|self|`.
    pub fn abs(self) -> Dd {
        if self.hi < 0.0 || (self.hi == 0.0 && self.lo < 0.0) {
            -self
        } else {
            self
        }
    }

    /// The sum of `xs`.
    pub fn sum(xs: impl IntoIterator<Item = f64>) -> Dd {
        xs.into_iter().fold(Dd::ZERO, |s, x| s + Dd::from(x))
    }
}

impl From<f64> for Dd {
    fn from(x: f64) -> Dd {
        Dd { hi: x, lo: 0.0 }
    }
}

impl From<f32> for Dd {
    fn from(x: f32) -> Dd {
        Dd::from(f64::from(x))
    }
}

impl Neg for Dd {
    type Output = Dd;
    fn neg(self) -> Dd {
        Dd {
            hi: -self.hi,
            lo: -self.lo,
        }
    }
}

impl Add for Dd {
    type Output = Dd;
    fn add(self, o: Dd) -> Dd {
        let (s, e) = two_sum(self.hi, o.hi);
        let (t, f) = two_sum(self.lo, o.lo);
        let (s, e) = two_sum(s, e + t);
        Dd::norm(s, e + f)
    }
}

impl Sub for Dd {
    type Output = Dd;
    fn sub(self, o: Dd) -> Dd {
        self + (-o)
    }
}

impl Mul for Dd {
    type Output = Dd;
    fn mul(self, o: Dd) -> Dd {
        let (p, e) = two_prod(self.hi, o.hi);
        Dd::norm(p, e + (self.hi * o.lo + self.lo * o.hi))
    }
}

impl Div for Dd {
    type Output = Dd;
    /// Long division: a first quotient, then a correction from the exact
    /// remainder.
    fn div(self, o: Dd) -> Dd {
        let q1 = self.hi / o.hi;
        let r = self - o * Dd::from(q1);
        let q2 = r.hi / o.hi;
        let r = r - o * Dd::from(q2);
        let q3 = r.hi / o.hi;
        Dd::from(q1) + Dd::from(q2) + Dd::from(q3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_f64_loses() {
        // 1 + 2⁻⁶⁰ − 1 is 2⁻⁶⁰, which f64 rounds away
        let tiny = 2f64.powi(-60);
        let s = Dd::from(1.0) + Dd::from(tiny) - Dd::from(1.0);
        assert_eq!(s.to_f64(), tiny);
        assert_eq!(1.0 + tiny - 1.0, 0.0);
    }

    #[test]
    fn products_and_quotients_are_near_exact() {
        // (1 + 2⁻³⁰)² = 1 + 2⁻²⁹ + 2⁻⁶⁰ exactly
        let a = Dd::from(1.0 + 2f64.powi(-30));
        let sq = a * a - Dd::from(1.0 + 2f64.powi(-29));
        assert_eq!(sq.to_f64(), 2f64.powi(-60));
        // 1/3·3 − 1 within 2⁻¹⁰⁰
        let third = Dd::from(1.0) / Dd::from(3.0);
        let back = third * Dd::from(3.0) - Dd::from(1.0);
        assert!(back.to_f64().abs() < 2f64.powi(-100));
        // the f64 quotient errs by about 2⁻⁵⁵
        let plain = (1.0f64 / 3.0 * 3.0 - 1.0).abs();
        assert!((third - Dd::from(1.0 / 3.0)).to_f64().abs() > 2f64.powi(-60));
        assert!(plain <= 2f64.powi(-52));
    }

    #[test]
    fn abs_and_sum() {
        assert_eq!(Dd::from(-2.0).abs().to_f64(), 2.0);
        let s = Dd::sum([1e16, 1.0, -1e16]);
        assert_eq!(s.to_f64(), 1.0);
    }
}
