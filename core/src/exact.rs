//! An exact accumulator for sums of f64 values, so that a sum over a
//! model does not depend on the order its chunks arrive in.
//!
//! Each value is split into 32-bit digits of a fixed-point number with
//! `LIMBS · 32` bits whose least significant bit weighs `2^EMIN`; digits
//! are added into `i64` limbs (no carries until the value is read, or
//! every 2³⁰ additions). Values below `2^EMIN` in magnitude are dropped
//! (each by itself, so still independently of the order); values must
//! be below `2^268` (room for 2⁴⁰ of them: f32 squares are below 2²⁵⁶). Reading rounds the exact sum to f64 once.

/// Weight of the lowest bit.
const EMIN: i32 = -330;
/// Limbs of 32 bits: `2^EMIN … 2^(EMIN + 32·LIMBS)`.
const LIMBS: usize = 20;

/// The exact sum of the f64 values added to it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExactSum {
    limbs: [i64; LIMBS],
    adds: u32,
}

impl Default for ExactSum {
    fn default() -> Self {
        Self::new()
    }
}

impl ExactSum {
    /// Zero.
    pub(crate) const fn new() -> Self {
        Self {
            limbs: [0; LIMBS],
            adds: 0,
        }
    }

    /// Adds `v` exactly (finite, `|v| < 2²⁶⁸`; values below `2^EMIN` and
    /// non-finite ones are ignored).
    pub(crate) fn add(&mut self, v: f64) {
        let bits = v.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32;
        if exp == 0x7ff {
            return;
        }
        let frac = bits & ((1 << 52) - 1);
        // v = ±mant · 2^(e)
        let (mant, e) = if exp == 0 {
            (frac, -1074)
        } else {
            (frac | 1 << 52, exp - 1075)
        };
        if mant == 0 {
            return;
        }
        let mut shift = e - EMIN;
        let mut mant = u128::from(mant);
        if shift < 0 {
            // the bits below 2^EMIN are dropped
            let s = (-shift) as u32;
            mant = if s >= 64 { 0 } else { mant >> s };
            shift = 0;
        }
        let limb = (shift / 32) as usize;
        let wide = mant << (shift % 32);
        let neg = bits >> 63 != 0;
        for k in 0..3 {
            let digit = ((wide >> (32 * k)) & 0xffff_ffff) as i64;
            if let Some(l) = self.limbs.get_mut(limb + k) {
                *l += if neg { -digit } else { digit };
            }
        }
        self.adds += 1;
        if self.adds >= 1 << 30 {
            self.normalize();
        }
    }

    /// Carries: every limb but the top one into `[0, 2³²)`.
    fn normalize(&mut self) {
        let mut carry = 0i64;
        for l in self.limbs.iter_mut() {
            let v = *l + carry;
            carry = v >> 32;
            *l = v - (carry << 32);
        }
        if let Some(top) = self.limbs.last_mut() {
            *top += carry << 32;
        }
        self.adds = 0;
    }

    /// The sum, rounded to f64 once (to nearest, ties to even).
    pub(crate) fn value(&self) -> f64 {
        let mut s = *self;
        s.normalize();
        let neg = s.limbs.last().is_some_and(|&t| t < 0);
        if neg {
            for l in s.limbs.iter_mut() {
                *l = -*l;
            }
            s.normalize();
        }
        let Some(h) = s.limbs.iter().rposition(|&l| l != 0) else {
            return 0.0;
        };
        // the top four limbs, with a sticky bit for the rest
        let mut top: u128 = 0;
        for k in 0..4 {
            let digit = h
                .checked_sub(k)
                .and_then(|i| s.limbs.get(i))
                .copied()
                .unwrap_or(0);
            top = top << 32 | u128::from(digit as u64 & 0xffff_ffff);
        }
        // the top limb may exceed 32 bits (it holds the carries)
        let high = s.limbs.get(h).copied().unwrap_or(0) >> 32;
        let sticky = h >= 4 && s.limbs.iter().take(h - 3).any(|&l| l != 0);
        let lead = top | u128::from(sticky);
        let m = lead as f64 + mul_pow2(high as f64, 128);
        let scale = EMIN + 32 * (h as i32 - 3);
        let v = mul_pow2(m, scale);
        if neg { -v } else { v }
    }
}

/// `m · 2^k`, by exact steps while the product stays normal.
fn mul_pow2(mut m: f64, mut k: i32) -> f64 {
    while k > 1000 {
        m *= f64::from_bits(((1023 + 1000) as u64) << 52);
        k -= 1000;
    }
    while k < -1000 {
        m *= f64::from_bits(((1023 - 1000) as u64) << 52);
        k += 1000;
    }
    m * f64::from_bits(((1023 + k) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_exactly_in_any_order() {
        let xs = [1e30, 1.0, -1e30, 3.5e-20, -2.25, 1e-90, 7.0];
        let mut a = ExactSum::new();
        for &x in &xs {
            a.add(x);
        }
        let mut b = ExactSum::new();
        for &x in xs.iter().rev() {
            b.add(x);
        }
        assert_eq!(a.value(), b.value());
        assert_eq!(a.value(), 1.0 + 3.5e-20 - 2.25 + 1e-90 + 7.0);
        let mut c = ExactSum::new();
        c.add(-0.1);
        c.add(-0.2);
        assert_eq!(c.value(), -0.30000000000000004_f64.next_down().next_up());
        let mut z = ExactSum::new();
        z.add(2f64.powi(200));
        z.add(-2f64.powi(200));
        assert_eq!(z.value(), 0.0);
    }
}
