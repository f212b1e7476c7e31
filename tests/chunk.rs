//! Chunked steps: every averager and aggregator, given its steps in
//! random chunkings and page orders, ends bit-identical to the
//! whole-buffer calls; the coverage rules refuse gaps, overlaps and
//! misaligned chunks and leave the state unchanged.

use fixed::types::{I1F15, I1F31};
use std::ops::Range;

use polyak::aggregate::{
    Drop, DualAveraging, Fisher, FisherAcc, FisherInput, InverseDistance, MaskedAverage,
    TaskArithmetic, Ties, TiesAcc, VarianceCorrected, WeightedAverage, median, trimmed_mean,
};
use polyak::chunk::{Chunkable, Chunked, Coverage, Progress};
use polyak::codec::Persist;
use polyak::layout::Layout;
use polyak::moments::{MomentF32, MomentQ15, Moments};
use polyak::naswa::{Naswa, NormScope};
use polyak::posthoc::PostHoc;
use polyak::window::{RamRing, Window};
use polyak::{
    CompF32, Ema, EmaBank, EmaShadow, Error, I2F62, I16F16, I49F15, Q15Ef, Rounding, Schedule,
    Skip, Swa,
};
use polyak_host::strategies::{chunking, config, f32_value, q15_value, q31_value};
use proptest::prelude::*;

/// Coverage words: 2048 elements at granule 1.
const W: usize = 64;

/// One step of `c` in the chunks `chunking(len, seed)` gives.
fn chunked_step<A, T>(c: &mut Chunked<A, W>, args: A::Args, x: &[T], seed: u64) -> Result<(), Error>
where
    A: for<'a> Chunkable<Input<'a> = &'a [T]>,
{
    c.begin(args)?;
    for pass in 0..A::PASSES {
        for r in chunking(x.len(), seed.wrapping_add(u64::from(pass))) {
            c.update_chunk(r.start, &x[r])?;
        }
        let p = c.finish()?;
        let want = if pass + 1 == A::PASSES {
            Progress::Committed
        } else {
            Progress::ApplyPass
        };
        assert_eq!(p, want);
    }
    Ok(())
}

fn steps<S: Strategy + 'static>(value: fn() -> S) -> impl Strategy<Value = Vec<Vec<S::Value>>> {
    (1usize..80)
        .prop_flat_map(move |n| prop::collection::vec(prop::collection::vec(value(), n), 1..8))
}

fn fail(e: Error) -> TestCaseError {
    TestCaseError::fail(format!("{e}"))
}

/// Runs `whole` and `paged` over the same steps; compares with `same`.
fn ema_case<A: EmaShadow + PartialEq + 'static>(
    whole: Ema<A, Vec<A>>,
    paged: Ema<A, Vec<A>>,
    xs: &[Vec<A::Param>],
    seed: u64,
) -> Result<(), TestCaseError>
where
    A::Param: std::fmt::Debug,
{
    let mut whole = whole;
    let mut paged: Chunked<_, W> = Chunked::new(paged, 1).map_err(fail)?;
    for (t, x) in xs.iter().enumerate() {
        whole.update(x).map_err(fail)?;
        chunked_step(&mut paged, (), x, seed ^ t as u64).map_err(fail)?;
        let p = paged.get().map_err(fail)?;
        prop_assert!(p.shadow() == whole.shadow(), "step {t}");
        prop_assert_eq!(p.steps(), whole.steps());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn ema_f32_chunked_is_whole(xs in steps(f32_value), seed in any::<u64>(), beta in 0.5f32..0.999) {
        let n = xs[0].len();
        ema_case(Ema::new(vec![0.0f32; n], beta).unwrap(), Ema::new(vec![0.0f32; n], beta).unwrap(), &xs, seed)?;
        let sched = Schedule::warmup(1.0, 0.75, 0.0, 0.999);
        ema_case(
            Ema::with_schedule(vec![CompF32::ZERO; n], sched).unwrap(),
            Ema::with_schedule(vec![CompF32::ZERO; n], sched).unwrap(),
            &xs, seed,
        )?;
        ema_case(
            Ema::new_debiased(vec![CompF32::ZERO; n], beta).unwrap(),
            Ema::new_debiased(vec![CompF32::ZERO; n], beta).unwrap(),
            &xs, seed,
        )?;
        // bad elements under `Skip`: imputed in both
        let mut xb = xs.clone();
        xb[0][n / 2] = f32::INFINITY;
        *xb.last_mut().unwrap().last_mut().unwrap() = f32::NAN;
        let make = || Ema::new_debiased(vec![CompF32::ZERO; n], beta).unwrap().with_policy::<Skip>();
        let mut whole = make();
        let mut paged: Chunked<_, W> = Chunked::new(make(), 1).map_err(fail)?;
        for (t, x) in xb.iter().enumerate() {
            whole.update(x).map_err(fail)?;
            chunked_step(&mut paged, (), x, seed ^ t as u64).map_err(fail)?;
            prop_assert!(record(paged.get().map_err(fail)?) == record(&whole), "step {}", t);
        }
    }

    #[test]
    fn ema_fixed_chunked_is_whole(xs in steps(q15_value), seed in any::<u64>(), beta in 0.5f32..0.999, rs in any::<u32>()) {
        let n = xs[0].len();
        for rounding in [Rounding::NearestEven, Rounding::Stochastic { seed: rs }] {
            let make = || Ema::new(vec![I1F31::ZERO; n], beta).unwrap().with_rounding(rounding).unwrap();
            ema_case(make(), make(), &xs, seed)?;
            let make = || Ema::new(vec![I1F15::ZERO; n], beta).unwrap().with_rounding(rounding).unwrap();
            ema_case(make(), make(), &xs, seed)?;
            let make = || Ema::new(vec![Q15Ef::ZERO; n], beta).unwrap().with_rounding(rounding).unwrap();
            ema_case(make(), make(), &xs, seed)?;
        }
    }

    #[test]
    fn ema_q31_chunked_is_whole(xs in steps(q31_value), seed in any::<u64>(), beta in 0.5f32..0.999, rs in any::<u32>()) {
        let n = xs[0].len();
        for rounding in [Rounding::NearestEven, Rounding::Stochastic { seed: rs }] {
            let make = || Ema::new(vec![I2F62::ZERO; n], beta).unwrap().with_rounding(rounding).unwrap();
            ema_case(make(), make(), &xs, seed)?;
        }
    }
}

// ---- every other averager and aggregator -----------------------------------

/// The state's saved record: equal records, equal states.
fn record<P: Persist>(p: &P) -> Vec<u8> {
    let mut buf = vec![0u8; p.encoded_len()];
    p.encode(&mut buf).unwrap();
    buf
}

/// Runs `steps` steps on `whole` (whole-buffer calls) and on `paged`
/// (random chunkings and orders, every pass), comparing `state` after each.
fn check_chunked<A: Chunkable>(
    mut whole: A,
    paged: A,
    (steps, seed): (usize, u64),
    whole_step: impl Fn(&mut A, usize) -> Result<(), Error>,
    args: impl Fn(usize) -> A::Args,
    feed: impl Fn(&mut Chunked<A, W>, usize, Range<usize>) -> Result<(), Error>,
    state: impl Fn(&A) -> Vec<u8>,
) -> Result<(), TestCaseError> {
    let n = whole.step_len();
    let mut c: Chunked<A, W> = Chunked::new(paged, 1).map_err(fail)?;
    for t in 0..steps {
        whole_step(&mut whole, t).map_err(fail)?;
        c.begin(args(t)).map_err(fail)?;
        for pass in 0..A::PASSES {
            let ranges = chunking(
                n,
                seed.wrapping_mul(31)
                    .wrapping_add((t * 8 + pass as usize) as u64),
            );
            for r in ranges {
                feed(&mut c, t, r).map_err(fail)?;
            }
            let want = if pass + 1 == A::PASSES {
                Progress::Committed
            } else {
                Progress::ApplyPass
            };
            prop_assert_eq!(c.finish().map_err(fail)?, want);
        }
        prop_assert!(state(c.get().map_err(fail)?) == state(&whole), "step {}", t);
    }
    Ok(())
}

fn models<S: Strategy + 'static>(value: fn() -> S) -> impl Strategy<Value = Vec<Vec<S::Value>>> {
    steps(value)
}

/// Values in ±4 (weights, Fisher values: the f32 corners are covered by
/// the averagers above).
fn unit() -> impl Strategy<Value = f32> {
    -4.0f32..4.0
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn bank_and_posthoc_chunked_are_whole(xs in steps(q15_value), xf in steps(f32_value), seed in any::<u64>(), rs in any::<u32>()) {
        let n = xs[0].len();
        let scheds = [Schedule::constant(0.9), { let mut s = Schedule::constant(0.99); s.update_every = 2; s }, Schedule::warmup(1.0, 0.75, 0.0, 0.999)];
        let make = || EmaBank::with_schedules(vec![[polyak::I1F31::ZERO; 3]; n], scheds).unwrap().with_rounding(Rounding::Stochastic { seed: rs }).unwrap();
        check_chunked(make(), make(), (xs.len(), seed),
            |a, t| a.update(&xs[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xs[t][r]), record)?;
        let nf = xf[0].len();
        let make = || EmaBank::with_schedules(vec![[CompF32::ZERO; 3]; nf], scheds).unwrap().with_policy::<Skip>();
        let mut xb = xf.clone();
        xb[0][0] = f32::NAN; // a bad element, skipped in both
        check_chunked(make(), make(), (xb.len(), seed),
            |a, t| a.update(&xb[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xb[t][r]), record)?;
        // no snapshot falls in these steps (see `posthoc_snapshots_after_chunked_steps`)
        let make = || PostHoc::new(vec![[CompF32::ZERO; 2]; nf], [0.05, 0.2], 1000).unwrap();
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| a.update(&xf[t], &mut NoSink).map(|_| ()).map_err(|_| Error::Storage), |_| (),
            |c, t, r| c.update_chunk(r.start, &xf[t][r]), record)?;
    }

    #[test]
    fn swa_window_moments_dual_chunked_are_whole(xf in steps(f32_value), xs in steps(q15_value), seed in any::<u64>()) {
        let (nf, nq) = (xf[0].len(), xs[0].len());
        let make = || Swa::new(vec![CompF32::ZERO; nf]);
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| a.update(&xf[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xf[t][r]), record)?;
        let make = || Swa::new(vec![I49F15::ZERO; nq]).with_policy::<Skip>();
        check_chunked(make(), make(), (xs.len(), seed),
            |a, t| a.update(&xs[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xs[t][r]), record)?;
        let make = || Window::new(vec![CompF32::ZERO; nf], RamRing::new(vec![0.0f32; 4 * nf], nf).unwrap(), 3).unwrap();
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| a.update(&xf[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xf[t][r]), record)?;
        let make = || Window::new(vec![I49F15::ZERO; nq], RamRing::new(vec![polyak::Q15::ZERO; 3 * nq], nq).unwrap(), 2).unwrap();
        check_chunked(make(), make(), (xs.len(), seed),
            |a, t| a.update(&xs[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xs[t][r]), record)?;
        let small: Vec<Vec<f32>> = xf.iter().map(|v| v.iter().map(|x| x.clamp(-1e12, 1e12)).collect()).collect();
        let make = || Moments::new(vec![MomentF32::ZERO; nf]);
        check_chunked(make(), make(), (small.len(), seed),
            |a, t| a.update(&small[t]), |_| (), |c, t, r| c.update_chunk(r.start, &small[t][r]), record)?;
        let make = || Moments::new(vec![MomentQ15::ZERO; nq]);
        check_chunked(make(), make(), (xs.len(), seed),
            |a, t| a.update(&xs[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xs[t][r]), record)?;
        let make = || DualAveraging::new(vec![CompF32::ZERO; nf]);
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| a.add(&xf[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xf[t][r]), record)?;
        let make = || DualAveraging::new(vec![I49F15::ZERO; nq]);
        check_chunked(make(), make(), (xs.len(), seed),
            |a, t| a.add(&xs[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xs[t][r]), record)?;
    }

    #[test]
    fn naswa_chunked_is_whole(xf in steps(unit), seed in any::<u64>(), tau in 0.05f32..0.9) {
        let n = xf[0].len();
        let layout = || -> Layout<3> {
            let mut l = Layout::new();
            l.push("a", n / 3).unwrap();
            l.push("b", n / 3).unwrap();
            l.push("c", n - 2 * (n / 3)).unwrap();
            l
        };
        for scope in [NormScope::Overall, NormScope::PerSegment] {
            let make = || Naswa::new(vec![CompF32::ZERO; n], layout(), tau, scope).unwrap();
            check_chunked(make(), make(), (xf.len(), seed),
                |a, t| a.update(&xf[t]).map(|_| ()), |_| (), |c, t, r| c.update_chunk(r.start, &xf[t][r]), record)?;
        }
    }

    #[test]
    fn weighted_masked_distance_spread_chunked_are_whole(
        xf in models(unit), xs in models(q15_value), ws in prop::collection::vec(0.0f32..3.0, 8), seed in any::<u64>()
    ) {
        let (nf, nq) = (xf[0].len(), xs[0].len());
        let make = || WeightedAverage::new(vec![CompF32::ZERO; nf]);
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| a.fold(&xf[t], ws[t]), |t| ws[t], |c, t, r| c.update_chunk(r.start, &xf[t][r]), record)?;
        let make = || WeightedAverage::new(vec![I49F15::ZERO; nq]);
        check_chunked(make(), make(), (xs.len(), seed),
            |a, t| a.fold(&xs[t], t as u32 * 17 + 1), |t| t as u32 * 17 + 1, |c, t, r| c.update_chunk(r.start, &xs[t][r]), record)?;
        // sparse models sharing one mask: zero wherever the first is
        let sparse: Vec<Vec<f32>> = xf.iter().map(|v| v.iter().zip(&xf[0]).map(|(&x, &m)| if m.abs() < 1.0 { 0.0 } else if x == 0.0 { 1.0 } else { x }).collect()).collect();
        let make = || MaskedAverage::new(vec![CompF32::ZERO; nf], vec![0u32; nf.div_ceil(32)]).unwrap();
        check_chunked(make(), make(), (sparse.len(), seed),
            |a, t| a.fold(&sparse[t], ws[t]), |t| ws[t], |c, t, r| c.update_chunk(r.start, &sparse[t][r]), record)?;
        let reference: Vec<f32> = (0..nf).map(|i| (i as f32 * 0.37).sin()).collect();
        let make = || InverseDistance::new(WeightedAverage::new(vec![CompF32::ZERO; nf]));
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| {
                let mut avg = WeightedAverage::new(a.average().sums().to_vec());
                avg.decode(&record(a.average())).unwrap();
                avg.fold_inverse_distance(&xf[t], &reference, 0.5)?;
                *a = InverseDistance::new(avg);
                Ok(())
            },
            |_| 0.5, |c, t, r| c.update_chunk(r.start, (&xf[t][r.clone()], &reference[r])), |a| record(a.average()))?;
        let layout = || -> Layout<2> {
            let mut l = Layout::new();
            l.push("w", nf / 2).unwrap();
            l.push("b", nf - nf / 2).unwrap();
            l
        };
        let make = || VarianceCorrected::new(vec![CompF32::ZERO; nf], layout()).unwrap();
        let out = |a: &VarianceCorrected<Vec<CompF32>, 2>| {
            let mut o = vec![0.0f32; nf];
            a.finish(&mut o).unwrap();
            let mut r = record(a);
            r.extend(o.iter().flat_map(|x| x.to_le_bytes()));
            r
        };
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| a.fold(&xf[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xf[t][r]), out)?;
    }

    #[test]
    fn fisher_task_ties_chunked_are_whole(
        xf in models(unit), xs in models(q15_value), seed in any::<u64>(), density in 0.05f32..1.0, rate in 0.0f32..0.9
    ) {
        let (nf, nq) = (xf[0].len(), xs[0].len());
        let fisher: Vec<Vec<f32>> = xf.iter().map(|v| v.iter().map(|x| x.abs()).collect()).collect();
        let base: Vec<f32> = (0..nf).map(|i| (i as f32 * 0.11).cos()).collect();
        let make = || Fisher::new(vec![FisherAcc::ZERO; nf], 1e-3).unwrap();
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| a.fold(&xf[t], &fisher[t]), |_| (),
            |c, t, r| c.update_chunk(r.start, FisherInput::Fisher { theta: &xf[t][r.clone()], fisher: &fisher[t][r] }), record)?;
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| a.fold_delta(&xf[t], &base, &fisher[t]), |_| (),
            |c, t, r| c.update_chunk(r.start, FisherInput::Delta { theta: &xf[t][r.clone()], base: &base[r.clone()], h: &fisher[t][r] }), record)?;
        let drop = |t: usize| Drop { rate, seed: 99, model: t as u32 };
        let make = || TaskArithmetic::new(vec![CompF32::ZERO; nf]);
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| if t % 2 == 0 { a.fold(&xf[t], &base, 0.5) } else { a.fold_dare(&xf[t], &base, -0.25, drop(t)) },
            |t| if t % 2 == 0 { (0.5, None) } else { (-0.25, Some(drop(t))) },
            |c, t, r| c.update_chunk(r.start, (&xf[t][r.clone()], &base[r])), record)?;
        let qbase: Vec<polyak::Q15> = (0..nq).map(|i| polyak::Q15::from_bits((i as i16).wrapping_mul(977))).collect();
        let w = I16F16::from_num(0.75);
        let make = || TaskArithmetic::new(vec![0i64; nq]);
        check_chunked(make(), make(), (xs.len(), seed),
            |a, t| a.fold_dare(&xs[t], &qbase, w, drop(t)), |t| (w, Some(drop(t))),
            |c, t, r| c.update_chunk(r.start, (&xs[t][r.clone()], &qbase[r])), record)?;
        let make = || Ties::<f32, _>::new(vec![TiesAcc::default(); nf]);
        check_chunked(make(), make(), (xf.len(), seed),
            |a, t| a.fold(&xf[t], &base, density), |_| density,
            |c, t, r| c.update_chunk(r.start, (&xf[t][r.clone()], &base[r])), record)?;
        let make = || Ties::<polyak::Q15, _>::new(vec![TiesAcc::default(); nq]);
        check_chunked(make(), make(), (xs.len(), seed),
            |a, t| a.fold(&xs[t], &qbase, density), |_| density,
            |c, t, r| c.update_chunk(r.start, (&xs[t][r.clone()], &qbase[r])), record)?;
    }

    #[test]
    fn q31_forms_chunked_are_whole(xq in steps(q31_value), seed in any::<u64>()) {
        let n = xq[0].len();
        let make = || Swa::new(vec![polyak::I33F31::ZERO; n]);
        check_chunked(make(), make(), (xq.len(), seed),
            |a, t| a.update(&xq[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xq[t][r]), record)?;
        let make = || Moments::new(vec![polyak::moments::MomentQ31::ZERO; n]);
        check_chunked(make(), make(), (xq.len(), seed),
            |a, t| a.update(&xq[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xq[t][r]), record)?;
        let make = || WeightedAverage::new(vec![polyak::I33F31::ZERO; n]);
        check_chunked(make(), make(), (xq.len(), seed),
            |a, t| a.fold(&xq[t], 3 * t as u32 + 2), |t| 3 * t as u32 + 2, |c, t, r| c.update_chunk(r.start, &xq[t][r]), record)?;
        let make = || DualAveraging::new(vec![polyak::I33F31::ZERO; n]);
        check_chunked(make(), make(), (xq.len(), seed),
            |a, t| a.add(&xq[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xq[t][r]), record)?;
        let base: Vec<polyak::Q31> = (0..n).map(|i| polyak::Q31::from_bits((i as i32).wrapping_mul(0x0123_4567))).collect();
        let drop = |t: usize| Drop { rate: 0.3, seed: 5, model: t as u32 };
        let w = I16F16::from_num(-0.5);
        let make = || TaskArithmetic::new(vec![0i128; n]);
        check_chunked(make(), make(), (xq.len(), seed),
            |a, t| a.fold_dare(&xq[t], &base, w, drop(t)), |t| (w, Some(drop(t))),
            |c, t, r| c.update_chunk(r.start, (&xq[t][r.clone()], &base[r])), record)?;
        let make = || Window::new(vec![polyak::I33F31::ZERO; n], RamRing::new(vec![polyak::Q31::ZERO; 3 * n], n).unwrap(), 2).unwrap();
        check_chunked(make(), make(), (xq.len(), seed),
            |a, t| a.update(&xq[t]), |_| (), |c, t, r| c.update_chunk(r.start, &xq[t][r]), record)?;
    }

    /// The robust statistics are functions of the models' values element by
    /// element: a page of each model gives that page of the result.
    #[test]
    fn robust_statistics_by_page_are_whole(xf in models(unit), seed in any::<u64>()) {
        let n = xf[0].len();
        let refs: Vec<&[f32]> = xf.iter().map(|v| &v[..]).collect();
        let (mut med, mut trim) = (vec![0.0f32; n], vec![0.0f32; n]);
        median(&refs, &mut med).unwrap();
        let k = (xf.len() - 1) / 2;
        trimmed_mean(&refs, k, &mut trim).unwrap();
        for r in chunking(n, seed) {
            let page: Vec<&[f32]> = xf.iter().map(|v| &v[r.clone()]).collect();
            let (mut m, mut t) = (vec![0.0f32; r.len()], vec![0.0f32; r.len()]);
            median(&page, &mut m).unwrap();
            trimmed_mean(&page, k, &mut t).unwrap();
            prop_assert_eq!(&m[..], &med[r.clone()]);
            prop_assert_eq!(&t[..], &trim[r]);
        }
    }
}

/// A snapshot sink that keeps nothing.
struct NoSink;

impl polyak::posthoc::SnapshotSink<f32> for NoSink {
    type Error = ();
    fn begin(&mut self, _: &polyak::posthoc::SnapshotMeta) -> Result<(), ()> {
        Ok(())
    }
    fn write(&mut self, _: &[f32]) -> Result<(), ()> {
        Ok(())
    }
    fn end(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

// ---- the coverage rules ------------------------------------------------------

#[test]
fn gaps_overlaps_and_misaligned_chunks_are_refused() {
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    let mut c: Chunked<_, 1> = Chunked::new(Swa::new([CompF32::ZERO; 7]), 2).unwrap();
    assert_eq!(c.update_chunk(0, &x[..2]), Err(Error::NoStep));
    assert_eq!(c.finish(), Err(Error::NoStep));
    c.begin(()).unwrap();
    assert_eq!(c.begin(()), Err(Error::StepInProgress));
    assert_eq!(
        c.update_chunk(1, &x[1..3]),
        Err(Error::ChunkMisaligned { index: 1 })
    );
    assert_eq!(
        c.update_chunk(2, &x[2..5]),
        Err(Error::ChunkMisaligned { index: 5 })
    );
    assert_eq!(
        c.update_chunk(6, &x[..2]),
        Err(Error::LengthMismatch {
            expected: 1,
            found: 2
        })
    );
    c.update_chunk(2, &x[2..4]).unwrap();
    c.update_chunk(6, &x[6..]).unwrap(); // the last chunk may end off the granule
    assert_eq!(
        c.update_chunk(2, &x[2..4]),
        Err(Error::ChunkOverlap { index: 2 })
    );
    assert_eq!(
        c.update_chunk(0, &x[..4]),
        Err(Error::ChunkOverlap { index: 2 })
    );
    // a bad value is refused and leaves the sums as they were
    let before = c.into_inner();
    let mut c: Chunked<_, 1> = Chunked::new(before.clone(), 2).unwrap();
    c.begin(()).unwrap();
    assert_eq!(
        c.update_chunk(0, &[1.0, f32::NAN]),
        Err(Error::NonFinite { index: 1 })
    );
    assert_eq!(c.covered(), 0);
    assert_eq!(c.abort(), Ok(()));
    assert_eq!(record(c.get().unwrap()), record(&before));
    c.begin(()).unwrap();
    c.update_chunk(0, &x[..2]).unwrap();
    assert_eq!(c.get().err(), Some(Error::StepInProgress));
    assert_eq!(c.abort(), Err(Error::StepInProgress)); // applied: finish it
    assert_eq!(c.finish(), Err(Error::StepIncomplete { index: 2 }));
    c.update_chunk(4, &x[4..6]).unwrap();
    c.update_chunk(2, &x[2..4]).unwrap();
    assert_eq!(c.finish(), Err(Error::StepIncomplete { index: 6 }));
    c.update_chunk(6, &x[6..]).unwrap();
    assert_eq!(c.finish(), Ok(Progress::Committed));
    assert_eq!(c.get().unwrap().count(), before.count() + 1);
}

#[test]
fn coverage_capacity_and_granule() {
    assert_eq!(
        Coverage::<1>::new(33, 1).err(),
        Some(Error::CapacityExceeded)
    );
    assert_eq!(Coverage::<1>::new(10, 0).err(), Some(Error::InvalidWindow));
    // a 1 MiB model of f32 in 1 KiB pages: 1024 bits
    let cov = Coverage::<32>::new(262_144, 256).unwrap();
    assert_eq!(
        std::mem::size_of_val(&cov) - 3 * std::mem::size_of::<usize>(),
        128
    );
    let mut cov = Coverage::<2>::new(64, 1).unwrap();
    cov.mark(10, 20).unwrap();
    assert_eq!(cov.missing(), Some(0));
    cov.mark(0, 10).unwrap();
    assert_eq!(cov.missing(), Some(30));
    cov.mark(30, 34).unwrap();
    assert_eq!(cov.missing(), None);
    assert_eq!(cov.covered(), 64);
}

/// Two-pass methods: the measuring pass changes nothing; it can be aborted.
#[test]
fn measuring_pass_changes_nothing() {
    let layout: Layout<1> = Layout::single("all", 4).unwrap();
    let mut n = Naswa::new([CompF32::ZERO; 4], layout, 0.1, NormScope::Overall).unwrap();
    n.update(&[1.0, 1.0, 1.0, 1.0]).unwrap();
    let before = record(&n);
    let mut c: Chunked<_, 1> = Chunked::new(n, 1).unwrap();
    c.begin(()).unwrap();
    c.update_chunk(2, &[5.0, 5.0][..]).unwrap();
    c.update_chunk(0, &[5.0, 5.0][..]).unwrap();
    assert_eq!(c.finish(), Ok(Progress::ApplyPass));
    c.update_chunk(0, &[5.0, 5.0][..]).unwrap();
    c.update_chunk(2, &[5.0, 5.0][..]).unwrap();
    assert_eq!(c.finish(), Ok(Progress::Committed));
    assert_eq!(c.get().unwrap().rejected(), 1); // norm 10 against 2: refused
    let rejected = record(c.get().unwrap());
    assert_ne!(rejected, before);
    c.begin(()).unwrap();
    c.update_chunk(0, &[1.0, 1.0, 1.0, 1.0][..]).unwrap();
    assert_eq!(c.finish(), Ok(Progress::ApplyPass));
    assert_eq!(c.abort(), Ok(()));
    assert_eq!(record(c.get().unwrap()), rejected);
}

#[test]
fn posthoc_snapshots_after_chunked_steps() {
    let mut whole = PostHoc::new(vec![[CompF32::ZERO; 2]; 5], [0.05, 0.2], 3).unwrap();
    let mut c: Chunked<_, 1> = Chunked::new(
        PostHoc::new(vec![[CompF32::ZERO; 2]; 5], [0.05, 0.2], 3).unwrap(),
        1,
    )
    .unwrap();
    for t in 0..7 {
        let x: Vec<f32> = (0..5).map(|i| (i * t) as f32).collect();
        let wrote = whole.update(&x, &mut NoSink).unwrap();
        c.begin(()).unwrap();
        c.update_chunk(3, &x[3..]).unwrap();
        c.update_chunk(0, &x[..3]).unwrap();
        c.finish().unwrap();
        let p = c.get_mut().unwrap();
        assert_eq!(p.snapshot_due(), wrote, "step {t}");
        if p.snapshot_due() {
            p.snapshot(&mut NoSink).unwrap();
        }
        assert_eq!(record(p), record(&whole));
    }
    assert_eq!(whole.snapshots(), 2);
}
