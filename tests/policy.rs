//! Input policies and extreme inputs: `Skip` keeps a bad
//! element's average and counts it; `Reject` refuses the whole update;
//! empty buffers, subnormals, ±f32::MAX and counters at their limits.

// Parallel per-element arrays (output, reference, skip counts) read best by index.
#![allow(clippy::needless_range_loop)]

use polyak::codec::{Persist, crc32};
use polyak::{CompF32, Ema, EmaBank, EmaShadow, Error, F32_LIMIT, I1F31, Q15, Skip, Swa, merge};
use polyak_host::bounds;
use polyak_host::dd::Dd;
use polyak_host::metrics::EPS;
use polyak_host::strategies::{beta, config};
use proptest::prelude::*;

/// A bad input: NaN, ±Inf, ±MAX or just beyond the limit.
fn bad() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(f32::MAX),
        Just(-f32::MAX),
        Just(F32_LIMIT * 4.0),
    ]
}

/// Steps of `n` values in [-4, 4), each replaced by a bad value with
/// probability 1/5.
fn dirty_steps(n: usize) -> impl Strategy<Value = Vec<Vec<f32>>> {
    let v = prop_oneof![4 => -4.0f32..4.0, 1 => bad()];
    prop::collection::vec(prop::collection::vec(v, n), 1..120)
}

fn valid(x: f32) -> bool {
    x.is_finite() && x.abs() <= F32_LIMIT
}

/// Per element: the EMA where a skipped element keeps its average
/// (copy-first: its shadow; debiased: s/w, so s scales with the weight),
/// in double-double precision.
struct SkipRef {
    alpha: Dd,
    debiased: bool,
    s: Vec<Dd>,
    w: Dd,
    started: bool,
    max_abs: Vec<f64>,
    skips: Vec<u64>,
}

impl SkipRef {
    fn update(&mut self, x: &[f32]) {
        let one = Dd::from(1.0);
        let w_new = self.w + self.alpha * (one - self.w);
        for i in 0..x.len() {
            let xi = Dd::from(x[i]);
            if valid(x[i]) {
                self.max_abs[i] = self.max_abs[i].max(f64::from(x[i]).abs());
                if !self.debiased && !self.started {
                    self.s[i] = xi;
                } else {
                    self.s[i] = self.s[i] + self.alpha * (xi - self.s[i]);
                }
            } else {
                self.skips[i] += 1;
                if self.debiased && self.w.to_f64() > 0.0 {
                    self.s[i] = self.s[i] * w_new / self.w;
                }
            }
        }
        self.w = w_new;
        self.started = true;
    }

    fn value(&self, i: usize) -> Dd {
        if self.debiased {
            self.s[i] / self.w
        } else {
            self.s[i]
        }
    }
}

fn check_skip<A: EmaShadow<Param = f32, Coef = f32>>(
    mut ema: Ema<A, Vec<A>, Skip>,
    xs: &[Vec<f32>],
    bound: impl Fn(f64, f64, u64) -> f64,
) -> Result<(), TestCaseError> {
    let n = ema.len();
    let alpha = f64::from(ema.alpha());
    let debiased = ema.init() == polyak::Init::ZeroDebiased;
    let mut r = SkipRef {
        alpha: Dd::from(alpha),
        debiased,
        s: vec![Dd::ZERO; n],
        w: Dd::ZERO,
        started: false,
        max_abs: vec![0.0; n],
        skips: vec![0; n],
    };
    let mut out = vec![0.0f32; n];
    let mut total = 0;
    for (t, x) in xs.iter().enumerate() {
        ema.update(x).unwrap();
        r.update(x);
        total += x.iter().filter(|v| !valid(**v)).count() as u64;
        prop_assert_eq!(ema.skipped(), total);
        ema.read_into(&mut out).unwrap();
        for i in 0..n {
            prop_assert!(out[i].is_finite());
            if r.max_abs[i] == 0.0 && r.skips[i] > 0 && !debiased {
                continue; // never had a valid value: reads as 0 + later values
            }
            // the documented bound, plus ε·M for each skip of the element
            let m = r.max_abs[i];
            let b = bound(m, alpha, t as u64 + 1) + r.skips[i] as f64 * EPS * m;
            let err = (Dd::from(out[i]) - r.value(i)).abs().to_f64();
            prop_assert!(
                err <= b,
                "step {t} elem {i}: {} vs {} (err {err:e} > {b:e}, {} skips)",
                out[i],
                r.value(i).to_f64(),
                r.skips[i]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn skip_keeps_bad_elements_averages(b in beta(), xs in dirty_steps(6)) {
        // a first step whose bad elements have no average yet would read 0:
        // start from a clean step so every element has one
        let mut xs = xs;
        xs.insert(0, vec![0.5, -0.5, 1.0, -1.0, 2.0, 0.0]);
        check_skip(Ema::new(vec![0.0f32; 6], b).unwrap().with_policy::<Skip>(), &xs, |m, a, _| bounds::ema_plain(m, a))?;
        check_skip(Ema::new(vec![CompF32::ZERO; 6], b).unwrap().with_policy::<Skip>(), &xs, |m, a, _| bounds::ema_comp(m, a))?;
        check_skip(Ema::new_debiased(vec![CompF32::ZERO; 6], b).unwrap().with_policy::<Skip>(), &xs, bounds::ema_comp_debiased)?;
    }

    #[test]
    fn swa_skip_keeps_bad_elements_means(xs in dirty_steps(5)) {
        let mut swa = Swa::new(vec![CompF32::ZERO; 5]).with_policy::<Skip>();
        // per element: sum and count; a skip adds the current mean
        let (mut sum, mut sum_abs) = ([0.0f64; 5], [0.0f64; 5]);
        let mut skips = [0u64; 5];
        let mut n = 0u64;
        let mut out = [0.0f32; 5];
        for x in &xs {
            swa.update(x).unwrap();
            for i in 0..5 {
                if valid(x[i]) {
                    sum[i] += f64::from(x[i]);
                    sum_abs[i] += f64::from(x[i]).abs();
                } else {
                    skips[i] += 1;
                    if n > 0 { let m = sum[i] / n as f64; sum[i] += m; sum_abs[i] += m.abs(); }
                }
            }
            n += 1;
            swa.read_into(&mut out).unwrap();
            for i in 0..5 {
                let (mean, mean_abs) = (sum[i] / n as f64, sum_abs[i] / n as f64);
                let m = mean_abs.max(1e-30);
                let b = bounds::swa_f32(mean, mean_abs, n) + skips[i] as f64 * EPS * m * 2.0;
                prop_assert!((f64::from(out[i]) - mean).abs() <= b, "elem {i}: {} vs {mean}", out[i]);
            }
        }
        prop_assert_eq!(swa.skipped(), skips.iter().sum::<u64>());
    }

    #[test]
    fn reject_refuses_and_skip_counts_in_the_bank(xs in dirty_steps(4)) {
        let mut reject = EmaBank::new(vec![[CompF32::ZERO; 2]; 4], [0.9, 0.99]).unwrap();
        let mut skip = EmaBank::new(vec![[CompF32::ZERO; 2]; 4], [0.9, 0.99]).unwrap().with_policy::<Skip>();
        let mut bad_total = 0u64;
        for x in &xs {
            let bad = x.iter().filter(|v| !valid(**v)).count() as u64;
            bad_total += bad;
            let before = format!("{reject:?}");
            let r = reject.update(x);
            if bad > 0 {
                let refused = matches!(r, Err(Error::NonFinite { .. } | Error::OutOfRange { .. }));
                prop_assert!(refused, "bad input must be refused");
                prop_assert_eq!(format!("{reject:?}"), before);
            } else {
                prop_assert!(r.is_ok());
            }
            skip.update(x).unwrap();
            prop_assert!(skip.shadow().iter().flatten().all(|c| c.hi().is_finite() && c.lo().is_finite()));
        }
        prop_assert_eq!(skip.skipped(), bad_total);
    }
}

#[test]
fn empty_buffers_are_fine_everywhere() {
    let mut e = Ema::new([0.0f32; 0], 0.9).unwrap();
    e.update(&[]).unwrap();
    e.read_into(&mut []).unwrap();
    let mut s = Swa::new([CompF32::ZERO; 0]);
    s.update(&[]).unwrap();
    s.read_into(&mut []).unwrap();
    let mut b = EmaBank::new([[I1F31::ZERO; 3]; 0], [0.5, 0.9, 0.99]).unwrap();
    b.update(&[]).unwrap();
    b.mixture_into(&[1.0, 1.0, 1.0], &mut []).unwrap();
    let empty: [f32; 0] = [];
    merge::weighted_average(&[&empty, &empty], &[1.0, 2.0], &mut []).unwrap();
    merge::interpolate(&empty, &empty, 0.3, &mut []).unwrap();
    // and they round-trip through the codec
    let mut buf = [0u8; 256];
    let n = e.encode(&mut buf).unwrap();
    let mut back = Ema::new([0.0f32; 0], 0.9).unwrap();
    back.decode(&buf[..n]).unwrap();
    assert_eq!(format!("{back:?}"), format!("{e:?}"));
}

#[test]
fn subnormal_and_limit_inputs() {
    // subnormal inputs stay within the bound and never go non-finite
    let tiny = f32::from_bits(3);
    let mut e = Ema::new([CompF32::ZERO; 2], 0.999).unwrap();
    for t in 0..10_000 {
        let s = if t % 2 == 0 { tiny } else { -tiny };
        e.update(&[s, f32::MIN_POSITIVE]).unwrap();
    }
    let mut out = [0.0f32; 2];
    e.read_into(&mut out).unwrap();
    assert!(
        out.iter()
            .all(|v| v.is_finite() && v.abs() <= f32::MIN_POSITIVE)
    );
    // exactly ±F32_LIMIT is accepted; a step beyond is not
    let mut p = Ema::new([0.0f32; 2], 0.5).unwrap();
    p.update(&[F32_LIMIT, -F32_LIMIT]).unwrap();
    p.update(&[-F32_LIMIT, F32_LIMIT]).unwrap();
    p.read_into(&mut out).unwrap();
    assert_eq!(out, [0.0, 0.0]);
    let beyond = f32::from_bits(F32_LIMIT.to_bits() + 1);
    assert_eq!(
        p.update(&[beyond, 0.0]),
        Err(Error::OutOfRange { index: 0 })
    );
    assert_eq!(
        p.update(&[0.0, -f32::MAX]),
        Err(Error::OutOfRange { index: 1 })
    );
    // under Skip, ±MAX is skipped, not averaged
    let mut s = Ema::new([0.0f32; 1], 0.5).unwrap().with_policy::<Skip>();
    s.update(&[1.0]).unwrap();
    s.update(&[f32::MAX]).unwrap();
    s.update(&[-f32::MAX]).unwrap();
    assert_eq!(s.shadow(), &[1.0]);
    assert_eq!(s.skipped(), 2);
    // SWA sums at the limit: 2^24 snapshots of ±2^100 stay finite
    let mut sw = Swa::new([CompF32::ZERO; 1]);
    sw.update(&[F32_LIMIT]).unwrap();
    assert!(sw.accumulator()[0].hi().is_finite());
}

/// Rewrites a field of an encoded record and fixes its checksum.
fn patch(rec: &mut [u8], at: usize, bytes: &[u8]) {
    rec[at..at + bytes.len()].copy_from_slice(bytes);
    let n = rec.len();
    let c = crc32(&rec[..n - 4]);
    rec[n - 4..].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn counters_at_their_limits() {
    // An EMA restored with 2^64 − 1 calls refuses the next update and
    // stays as it was.
    let mut e = Ema::new([I1F31::ZERO; 2], 0.9).unwrap();
    e.update(&[Q15::from_num(0.25); 2]).unwrap();
    let mut rec = vec![0u8; e.encoded_len()];
    e.encode(&mut rec).unwrap();
    let calls_at = 24 + 37 + 4 + 4; // header, configuration, α, generator
    patch(&mut rec, calls_at, &u64::MAX.to_le_bytes());
    let mut full = Ema::new([I1F31::ZERO; 2], 0.9).unwrap();
    full.decode(&rec).unwrap();
    assert_eq!(full.steps(), u64::MAX);
    let before = format!("{full:?}");
    assert_eq!(full.update(&[Q15::ZERO; 2]), Err(Error::CountOverflow));
    assert_eq!(format!("{full:?}"), before);
    let mut out = [Q15::ZERO; 2];
    full.read_into(&mut out).unwrap();
    assert_eq!(out, [Q15::from_num(0.25); 2]);
    // a skipped count at its limit saturates rather than wraps
    let mut s = Ema::new([0.0f32; 1], 0.9).unwrap().with_policy::<Skip>();
    s.update(&[1.0]).unwrap();
    let mut rec = vec![0u8; s.encoded_len()];
    s.encode(&mut rec).unwrap();
    let skipped_at = rec.len() - 4 - 4 - 8; // before the one element and the CRC
    patch(&mut rec, skipped_at, &u64::MAX.to_le_bytes());
    s.decode(&rec).unwrap();
    s.update(&[f32::NAN]).unwrap();
    assert_eq!(s.skipped(), u64::MAX);
}
