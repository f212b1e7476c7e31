//! Cortex-M4F / M7F / M33F kernels in inline assembly (Armv7E-M or
//! Armv8-M Mainline with the single-precision FPU and the DSP extension).
//!
//! This is the one module where `unsafe` is allowed. Each kernel processes
//! whole blocks and returns how many elements it did; the caller finishes
//! the rest with the safe twin, which is also the kernel on every other
//! target and the reference the tests compare against bit for bit:
//!
//! - the f32 updates use `vsub` then `vmla`, whose product is rounded
//!   before the add (not fused), exactly as `s + a·(x − s)` in Rust;
//! - the fixed-point sums use `smlal` / `smlalbb` / `smlaltb`, exact 64-bit
//!   multiply-accumulates that wrap like the safe `i64` arithmetic (which
//!   the callers keep from overflowing).
//!
//! Every block reads its inputs and reads/writes its outputs inside the
//! slices it was given, and nothing else.
#![allow(unsafe_code)]

use crate::format::{I1F15, I1F31, I33F31, I49F15};

/// `s[i] ← s[i] + a·(x[i] − s[i])`, 8 elements per iteration
/// (`vldm` / 8 × `vsub` / 8 × `vmla` / `vstm`: about 2.6 instructions per
/// element). Returns the elements done, a multiple of 8.
#[inline]
pub(crate) fn ema_f32(s: &mut [f32], x: &[f32], a: f32) -> usize {
    let blocks = s.len().min(x.len()) / 8;
    if blocks == 0 {
        return 0;
    }
    // SAFETY: `s` and `x` hold at least `8·blocks` f32 each; they cannot
    // overlap (`s` is borrowed mutably); f32 slices are 4-byte aligned, as
    // `vldm`/`vstm` need. The loop reads `x[..8·blocks]`, reads and writes
    // `s[..8·blocks]`, and touches no other memory but the stack, where
    // s0–s16 are saved on entry and restored on exit (stable Rust cannot
    // name FPU registers as operands), so no register changes behind the
    // compiler's back.
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s16}}",
            "vmov s16, {a}",
            "2:",
            "vldm {x}!, {{s0-s7}}",
            "vldm {s}, {{s8-s15}}",
            "vsub.f32 s0, s0, s8",
            "vsub.f32 s1, s1, s9",
            "vsub.f32 s2, s2, s10",
            "vsub.f32 s3, s3, s11",
            "vsub.f32 s4, s4, s12",
            "vsub.f32 s5, s5, s13",
            "vsub.f32 s6, s6, s14",
            "vsub.f32 s7, s7, s15",
            "vmla.f32 s8, s16, s0",
            "vmla.f32 s9, s16, s1",
            "vmla.f32 s10, s16, s2",
            "vmla.f32 s11, s16, s3",
            "vmla.f32 s12, s16, s4",
            "vmla.f32 s13, s16, s5",
            "vmla.f32 s14, s16, s6",
            "vmla.f32 s15, s16, s7",
            "vstm {s}!, {{s8-s15}}",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vpop {{s0-s16}}",
            s = inout(reg) s.as_mut_ptr() => _,
            x = inout(reg) x.as_ptr() => _,
            n = inout(reg) blocks => _,
            a = in(reg) a.to_bits(),
        );
    }
    blocks * 8
}

/// A bank of three f32 EMAs per parameter (`rows` is `[s₀, s₁, s₂]` per
/// element, flattened): each `s_k ← s_k + a_k·(x − s_k)`, two elements per
/// iteration. Returns the elements done (even).
#[inline]
pub(crate) fn bank3_f32(rows: &mut [f32], x: &[f32], a: [f32; 3]) -> usize {
    let pairs = (rows.len() / 3).min(x.len()) / 2;
    if pairs == 0 {
        return 0;
    }
    // SAFETY: `rows` holds at least `6·pairs` f32 and `x` at least
    // `2·pairs`; they cannot overlap; both are 4-byte aligned. The loop
    // reads `x[..2·pairs]`, reads and writes `rows[..6·pairs]` and nothing
    // else but the stack, where s0–s18 are saved and restored.
    unsafe {
        core::arch::asm!(
            "vpush {{s0-s18}}",
            "vmov s16, {a0}",
            "vmov s17, {a1}",
            "vmov s18, {a2}",
            "2:",
            "vldm {x}!, {{s0-s1}}",
            "vldm {s}, {{s8-s13}}",
            "vsub.f32 s2, s0, s8",
            "vsub.f32 s3, s0, s9",
            "vsub.f32 s4, s0, s10",
            "vsub.f32 s5, s1, s11",
            "vsub.f32 s6, s1, s12",
            "vsub.f32 s7, s1, s13",
            "vmla.f32 s8, s16, s2",
            "vmla.f32 s9, s17, s3",
            "vmla.f32 s10, s18, s4",
            "vmla.f32 s11, s16, s5",
            "vmla.f32 s12, s17, s6",
            "vmla.f32 s13, s18, s7",
            "vstm {s}!, {{s8-s13}}",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vpop {{s0-s18}}",
            s = inout(reg) rows.as_mut_ptr() => _,
            x = inout(reg) x.as_ptr() => _,
            n = inout(reg) pairs => _,
            a0 = in(reg) a[0].to_bits(),
            a1 = in(reg) a[1].to_bits(),
            a2 = in(reg) a[2].to_bits(),
        );
    }
    pairs * 2
}

/// `acc[i] += w·x[i]` for Q15 `x` and a weight `w < 2¹⁵`, `acc` the exact
/// sums (an i64 each): two elements per iteration with `smlalbb` / `smlaltb`
/// (3.5 instructions per element). Returns the elements done (even).
#[inline]
pub(crate) fn mac_q15(acc: &mut [I49F15], x: &[I1F15], w: u16) -> usize {
    let pairs = acc.len().min(x.len()) / 2;
    if pairs == 0 || w > 0x7fff {
        return 0;
    }
    // SAFETY: `acc` holds at least `2·pairs` i64 (8-byte aligned, as `ldm`
    // needs 4) and `x` at least `2·pairs` i16, read a word (two values)
    // at a time with `ldr`, which the Cortex-M4 allows unaligned; they
    // cannot overlap. Only those elements are read and written; r0–r3 are
    // declared clobbered.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldm {acc}, {{r0, r1, r2, r3}}",
            "ldr {xw}, [{x}], #4",
            "smlalbb r0, r1, {xw}, {w}",
            "smlaltb r2, r3, {xw}, {w}",
            "stm {acc}!, {{r0, r1, r2, r3}}",
            "subs {n}, {n}, #1",
            "bne 2b",
            acc = inout(reg) acc.as_mut_ptr() => _,
            x = inout(reg) x.as_ptr() => _,
            n = inout(reg) pairs => _,
            xw = out(reg) _,
            w = in(reg) u32::from(w),
            out("r0") _, out("r1") _, out("r2") _, out("r3") _,
            options(nostack),
        );
    }
    pairs * 2
}

/// `acc[i] += w·x[i]` for Q31 `x` and a weight `w < 2³¹`, `acc` the exact
/// sums (an i64 each): two elements per iteration with `smlal` (3.5 instructions per
/// element). Returns the elements done (even).
#[inline]
pub(crate) fn mac_q31(acc: &mut [I33F31], x: &[I1F31], w: u32) -> usize {
    let pairs = acc.len().min(x.len()) / 2;
    if pairs == 0 || w > 0x7fff_ffff {
        return 0;
    }
    // SAFETY: `acc` holds at least `2·pairs` i64 and `x` at least
    // `2·pairs` i32, both aligned for `ldm`/`ldrd`; they cannot overlap.
    // Only those elements are read and written; r0–r3 are declared
    // clobbered.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldm {acc}, {{r0, r1, r2, r3}}",
            "ldrd {x0}, {x1}, [{x}], #8",
            "smlal r0, r1, {x0}, {w}",
            "smlal r2, r3, {x1}, {w}",
            "stm {acc}!, {{r0, r1, r2, r3}}",
            "subs {n}, {n}, #1",
            "bne 2b",
            acc = inout(reg) acc.as_mut_ptr() => _,
            x = inout(reg) x.as_ptr() => _,
            n = inout(reg) pairs => _,
            x0 = out(reg) _,
            x1 = out(reg) _,
            w = in(reg) w,
            out("r0") _, out("r1") _, out("r2") _, out("r3") _,
            options(nostack),
        );
    }
    pairs * 2
}

/// The Q15 EMA with a Q31 shadow, rounding to nearest-even:
/// `s ← s + round(α·(x·2¹⁶ − s)/2³¹)` with `α ≤ 2³¹` (Q31), one element
/// per iteration: the 33-bit difference (`subs`/`sbc`), the 64-bit product
/// (`umull` and an `mla` for the difference's sign), the nearest-even bias
/// `2³⁰ − 1 + parity` added with carry, and the shift recombined — 17
/// instructions per element. Returns the elements done (all of them).
#[inline]
pub(crate) fn ema_q15_wide(s: &mut [I1F31], x: &[I1F15], alpha: u32) -> usize {
    let n = s.len().min(x.len());
    if n == 0 || alpha > 1 << 31 {
        return 0;
    }
    // SAFETY: `s` holds at least `n` i32 (4-byte aligned) and `x` at least
    // `n` i16 (2-byte aligned, read with `ldrsh`); they cannot overlap. The
    // loop reads `x[..n]`, reads and writes `s[..n]` and nothing else; all
    // registers it changes are operands.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldrsh {v}, [{xp}], #2",
            "ldr {sv}, [{sp}]",
            "lsls {v}, {v}, #16",
            "subs {dlo}, {v}, {sv}",
            "asr {t}, {v}, #31",
            "sbc {dhi}, {t}, {sv}, asr #31",
            "umull {v}, {ph}, {dlo}, {a}",
            "mla {ph}, {dhi}, {a}, {ph}",
            "add {t}, {c}, {v}, lsr #31",
            "adds {v}, {v}, {t}",
            "adc {ph}, {ph}, #0",
            "lsls {ph}, {ph}, #1",
            "orr {ph}, {ph}, {v}, lsr #31",
            "add {sv}, {sv}, {ph}",
            "str {sv}, [{sp}], #4",
            "subs {n}, {n}, #1",
            "bne 2b",
            xp = inout(reg) x.as_ptr() => _,
            sp = inout(reg) s.as_mut_ptr() => _,
            n = inout(reg) n => _,
            a = in(reg) alpha,
            c = in(reg) 0x3fff_ffffu32,
            v = out(reg) _,
            sv = out(reg) _,
            dlo = out(reg) _,
            dhi = out(reg) _,
            t = out(reg) _,
            ph = out(reg) _,
            options(nostack),
        );
    }
    n
}

/// Compares every assembly kernel with its safe twin, bit for bit, on
/// seeded random buffers of awkward lengths (0, 1, odd, not a multiple of
/// the unroll, with the remainder the safe code finishes). Returns the
/// number of cases compared.
///
/// # Errors
/// The name of the first kernel that differs.
pub fn selftest(seed: u64) -> Result<u32, &'static str> {
    const LENS: [usize; 16] = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 24, 31, 64, 65, 131];
    const MAX: usize = 131;
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let same = |p: &[f32], q: &[f32]| p.iter().zip(q).all(|(a, b)| a.to_bits() == b.to_bits());
    let mut cases = 0;
    for _ in 0..8 {
        for &n in &LENS {
            let n = n.min(MAX);
            let mut x = [0.0f32; MAX];
            let mut s0 = [0.0f32; MAX];
            for (x, s) in x.iter_mut().zip(s0.iter_mut()) {
                *x = ((next() >> 40) as f32 - 8_388_608.0) / 1_048_576.0;
                *s = ((next() >> 40) as f32 - 8_388_608.0) / 1_048_576.0;
            }
            let a = (((next() >> 41) as f32) / 8_388_608.0).max(1e-6);
            let x = x.get(..n).unwrap_or(&[]);
            // EMA f32: the dispatching kernel against the plain loop
            let (mut fast, mut safe) = (s0, s0);
            super::ema::plain_f32(fast.get_mut(..n).unwrap_or(&mut []), x, a);
            for (s, &x) in safe.iter_mut().zip(x) {
                *s += a * (x - *s);
            }
            if !same(&fast, &safe) {
                return Err("ema_f32");
            }
            // bank of three
            let alphas = [a, (a * 0.5).max(1e-6), (a * 0.25).max(1e-6)];
            let mut fast = [[0.0f32; 3]; MAX];
            for (f, &v) in fast.iter_mut().zip(&s0) {
                *f = [v, -v, v * 0.5];
            }
            let mut safe = fast;
            let rows = fast.get_mut(..n).unwrap_or(&mut []);
            let done = bank3_f32(rows.as_flattened_mut(), x, alphas);
            let tail = rows.get_mut(done..).unwrap_or(&mut []);
            for (row, &x) in tail.iter_mut().zip(x.get(done..).unwrap_or(&[])) {
                for (s, &a) in row.iter_mut().zip(&alphas) {
                    *s += a * (x - *s);
                }
            }
            for (row, &x) in safe.iter_mut().zip(x) {
                for (s, &a) in row.iter_mut().zip(&alphas) {
                    *s += a * (x - *s);
                }
            }
            if !same(fast.as_flattened(), safe.as_flattened()) {
                return Err("bank3_f32");
            }
            // exact multiply-accumulates
            let w = (next() >> 33) as u32;
            let w15 = (w & 0x7fff) as u16;
            let mut q15 = [I1F15::ZERO; MAX];
            let mut q31 = [I1F31::ZERO; MAX];
            let mut a15 = [I49F15::ZERO; MAX];
            let mut a31 = [I33F31::ZERO; MAX];
            for (((q15, q31), a15), a31) in q15
                .iter_mut()
                .zip(q31.iter_mut())
                .zip(a15.iter_mut())
                .zip(a31.iter_mut())
            {
                *q15 = I1F15::from_bits((next() >> 48) as u16 as i16);
                *q31 = I1F31::from_bits((next() >> 32) as u32 as i32);
                *a15 = I49F15::from_bits((next() >> 20) as i64 - (1 << 43));
                *a31 = I33F31::from_bits((next() >> 4) as i64 - (1 << 59));
            }
            let (mut f15, mut f31) = (a15, a31);
            let d15 = mac_q15(
                f15.get_mut(..n).unwrap_or(&mut []),
                q15.get(..n).unwrap_or(&[]),
                w15,
            );
            let d31 = mac_q31(
                f31.get_mut(..n).unwrap_or(&mut []),
                q31.get(..n).unwrap_or(&[]),
                w,
            );
            let ok15 = f15.iter().zip(&a15).zip(&q15).take(d15).all(|((f, a), q)| {
                f.to_bits() == a.to_bits() + i64::from(w15) * i64::from(q.to_bits())
            });
            let ok31 = f31.iter().zip(&a31).zip(&q31).take(d31).all(|((f, a), q)| {
                f.to_bits()
                    == a.to_bits()
                        .wrapping_add(i64::from(w) * i64::from(q.to_bits()))
            });
            if !ok15 {
                return Err("mac_q15");
            }
            if !ok31 {
                return Err("mac_q31");
            }
            if d15 != n & !1 || d31 != n & !1 {
                return Err("mac coverage");
            }
            // Q15 EMA, Q31 shadow, nearest-even (α up to 1 exactly)
            let alpha = match n % 3 {
                0 => 1u32 << 31,
                1 => ((next() >> 33) as u32).max(1),
                _ => ((next() >> 45) as u32).max(1),
            };
            let mut fast = [I1F31::ZERO; MAX];
            for (f, q) in fast.iter_mut().zip(&q31) {
                *f = *q;
            }
            let mut safe = fast;
            let done = ema_q15_wide(
                fast.get_mut(..n).unwrap_or(&mut []),
                q15.get(..n).unwrap_or(&[]),
                alpha,
            );
            for (s, x) in safe.iter_mut().zip(q15.get(..n).unwrap_or(&[])) {
                *s = I1F31::from_bits(super::ema::q15_wide_step(
                    s.to_bits(),
                    x.to_bits(),
                    i64::from(alpha),
                    &mut crate::num::Nearest,
                ));
            }
            if done != n || fast.iter().zip(&safe).any(|(p, q)| p != q) {
                return Err("ema_q15_wide");
            }
            cases += 5;
        }
    }
    Ok(cases)
}
