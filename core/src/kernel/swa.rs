//! SWA accumulation and readout loops.

use core::num::NonZeroU64;

use crate::format::{CompF32, I1F15, I1F31, I33F31, I49F15};
use crate::num::{div_round_i64, two_sum};

/// Adds `x` to a compensated pair, renormalising so `|lo| ≤ ulp(hi)/2`.
///
/// Inlined where the FPU does the arithmetic; with soft float (every
/// operation already a call) one shared copy keeps the callers small.
#[cfg_attr(not(all(target_arch = "arm", target_abi = "eabi")), inline(always))]
#[cfg_attr(all(target_arch = "arm", target_abi = "eabi"), inline(never))]
pub(crate) fn comp_add(s: CompF32, x: f32) -> CompF32 {
    let (h, e) = two_sum(s.hi(), x);
    let (hi, lo) = two_sum(h, s.lo() + e);
    CompF32::from_parts_unchecked(hi, lo)
}

/// `acc[i] += x[i]` in compensated f32.
pub(crate) fn add_comp(acc: &mut [CompF32], x: &[f32]) {
    for (a, &x) in acc.iter_mut().zip(x) {
        *a = comp_add(*a, x);
    }
}

/// `out[i] = fl(fl(hi + lo) / n)`.
pub(crate) fn mean_comp(acc: &[CompF32], n: f32, out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(acc) {
        *o = a.value() / n;
    }
}

/// `acc[i] += x[i]`, exact (the caller bounds the count so it cannot overflow).
pub(crate) fn add_q15(acc: &mut [I49F15], x: &[I1F15]) {
    #[cfg(polyak_m4f)]
    let (acc, x) = {
        let done = super::arm::mac_q15(acc, x, 1);
        (
            acc.get_mut(done..).unwrap_or(&mut []),
            x.get(done..).unwrap_or(&[]),
        )
    };
    for (a, x) in acc.iter_mut().zip(x) {
        *a = I49F15::from_bits(a.to_bits() + i64::from(x.to_bits()));
    }
}

/// `acc[i] += x[i]`, exact (the caller bounds the count so it cannot overflow).
pub(crate) fn add_q31(acc: &mut [I33F31], x: &[I1F31]) {
    #[cfg(polyak_m4f)]
    let (acc, x) = {
        let done = super::arm::mac_q31(acc, x, 1);
        (
            acc.get_mut(done..).unwrap_or(&mut []),
            x.get(done..).unwrap_or(&[]),
        )
    };
    for (a, x) in acc.iter_mut().zip(x) {
        *a = I33F31::from_bits(a.to_bits() + i64::from(x.to_bits()));
    }
}

/// `out[i] = round(acc[i] / n)`, nearest-even. The mean of in-range values is
/// in range, so the narrowing cast is exact.
pub(crate) fn mean_q15(acc: &[I49F15], n: NonZeroU64, out: &mut [I1F15]) {
    for (o, a) in out.iter_mut().zip(acc) {
        *o = I1F15::from_bits(div_round_i64(a.to_bits(), n) as i16);
    }
}

/// `out[i] = round(acc[i] / n)`, nearest-even.
pub(crate) fn mean_q31(acc: &[I33F31], n: NonZeroU64, out: &mut [I1F31]) {
    for (o, a) in out.iter_mut().zip(acc) {
        *o = I1F31::from_bits(div_round_i64(a.to_bits(), n) as i32);
    }
}
