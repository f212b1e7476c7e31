//! Error metrics: ulps for f32, LSBs for fixed point.

/// f32 machine epsilon, 2⁻²³, as f64.
pub const EPS: f64 = f32::EPSILON as f64;
/// Smallest positive normal f32, 2⁻¹²⁶, as f64.
pub const MIN_NORMAL: f64 = f32::MIN_POSITIVE as f64;
/// Smallest positive subnormal f32, 2⁻¹⁴⁹, as f64.
pub const ETA: f64 = 1.401_298_464_324_817e-45;

/// The spacing of f32 values at magnitude `x`: `2^(e − 23)` for
/// `2^e ≤ |x| < 2^(e+1)`, and 2⁻¹⁴⁹ in the subnormal range.
pub fn ulp(x: f64) -> f64 {
    let a = x.abs();
    if a < MIN_NORMAL {
        return ETA;
    }
    let e = a.log2().floor();
    // log2 can be off by one right at powers of two; correct it.
    let e = if 2f64.powf(e) > a {
        e - 1.0
    } else if 2f64.powf(e + 1.0) <= a {
        e + 1.0
    } else {
        e
    };
    2f64.powf(e - 23.0)
}

/// `|got − want|` in ulps of `scale` (use the largest input magnitude).
pub fn ulps(got: f32, want: f64, scale: f64) -> f64 {
    (f64::from(got) - want).abs() / ulp(scale)
}

/// Value of one LSB of Q15.
pub const LSB15: f64 = 1.0 / 32768.0;
/// Value of one LSB of Q31.
pub const LSB31: f64 = 1.0 / 2_147_483_648.0;

/// `|got − want|` in Q15 LSBs.
pub fn lsb15(got: fixed::types::I1F15, want: f64) -> f64 {
    (got.to_num::<f64>() - want).abs() / LSB15
}

/// `|got − want|` in Q31 LSBs.
pub fn lsb31(got: fixed::types::I1F31, want: f64) -> f64 {
    (got.to_num::<f64>() - want).abs() / LSB31
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulp_matches_f32_spacing() {
        for x in [1.0f32, 1.5, 0.75, 3.0e-39, 1e30, 2.0, 1.9999999] {
            let next = f32::from_bits(x.to_bits() + 1);
            assert_eq!(ulp(f64::from(x)), f64::from(next) - f64::from(x), "{x}");
        }
        assert_eq!(ETA, f64::from(f32::from_bits(1)));
    }
}
