//! Per-segment policies: each against its plain reference (the averaged
//! segments bit-identical to the method run on them alone; the kept ones
//! against the latest value, the integer sum, the maximum, the first
//! value), in f32 and fixed point, whole and chunked; and a model with
//! weights, normalisation statistics and a counter, end to end.

use demo::rng::Rng;
use polyak::aggregate::{TaskArithmetic, WeightedAverage};
use polyak::chunk::Chunked;
use polyak::layout::{Layout, Policy};
use polyak::naswa::{Naswa, NormScope};
use polyak::segment::Segmented;
use polyak::{CompF32, Ema, Error, I49F15, Q15, Swa};
use polyak_host::strategies::{chunking, config, q15_value};
use proptest::prelude::*;

const POLICIES: [Policy; 5] = [
    Policy::Average,
    Policy::CopyLatest,
    Policy::Sum,
    Policy::Max,
    Policy::Skip,
];

/// A layout of `lens.len()` segments with the given policies.
fn layout(lens: &[usize], policies: &[Policy]) -> Layout<8> {
    let mut l = Layout::new();
    for (&n, &p) in lens.iter().zip(policies) {
        l.push_with("s", n, p).unwrap();
    }
    l
}

/// Elements of `x` in the segments with policy `p`, in order.
fn gather<T: Copy>(l: &Layout<8>, x: &[T], p: Policy) -> Vec<T> {
    l.segments()
        .iter()
        .filter(|s| s.policy == p)
        .flat_map(|s| x[s.range()].iter().copied())
        .collect()
}

/// Checks each kept segment of `out` against the references, and the
/// averaged ones against `avg` (the method run on the averaged elements
/// alone).
fn check_kept(
    l: &Layout<8>,
    xs: &[Vec<f64>],
    out: &[f64],
    avg: &[f64],
) -> Result<(), TestCaseError> {
    let t = xs.len();
    let mut a = 0;
    for s in l.segments() {
        for i in s.range() {
            let want = match s.policy {
                Policy::Average => {
                    a += 1;
                    avg[a - 1]
                }
                Policy::CopyLatest => xs[t - 1][i],
                Policy::Sum => xs.iter().map(|x| x[i]).sum(),
                Policy::Max => xs.iter().map(|x| x[i]).fold(f64::NEG_INFINITY, f64::max),
                Policy::Skip => xs[0][i],
            };
            prop_assert_eq!(out[i], want, "element {} ({:?})", i, s.policy);
        }
    }
    Ok(())
}

fn case() -> impl Strategy<Value = (Vec<usize>, Vec<Policy>, u64)> {
    (
        prop::collection::vec(0usize..12, 1..8),
        prop::collection::vec(prop::sample::select(POLICIES.to_vec()), 8),
        any::<u64>(),
    )
}

/// f32 steps: integers in the summed segments (counters), fractions
/// elsewhere.
fn f32_steps(l: &Layout<8>, t: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let counter = |i: usize| {
        l.segments()
            .iter()
            .any(|s| s.policy == Policy::Sum && s.range().contains(&i))
    };
    (0..t)
        .map(|_| {
            (0..l.len())
                .map(|i| {
                    if counter(i) {
                        (rng.uniform() * 50.0).round()
                    } else {
                        rng.uniform() * 3.0
                    }
                })
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(config(64))]

    /// An f32 EMA and SWA with every policy: the averaged segments are the
    /// method's bits on those elements alone; the kept ones equal the
    /// f64 references exactly (sums of integers below 2²⁴).
    #[test]
    fn f32_policies_match_their_references((lens, policies, seed) in case(), t in 1usize..9) {
        let l = layout(&lens, &policies);
        let n = l.len();
        let xs = f32_steps(&l, t, seed);
        let xs64: Vec<Vec<f64>> = xs.iter().map(|x| x.iter().map(|&v| f64::from(v)).collect()).collect();
        let na = n - l.kept_len();
        // EMA
        let mut seg = Segmented::new(Ema::new(vec![CompF32::ZERO; n], 0.9).unwrap(), l.clone(), vec![0.0f32; l.kept_len()]).unwrap();
        let mut plain = Ema::new(vec![CompF32::ZERO; na], 0.9).unwrap();
        for x in &xs {
            seg.update((), x).unwrap();
            plain.update(&gather(&l, x, Policy::Average)).unwrap();
        }
        let mut out = vec![0.0f32; n];
        seg.inner().read_into(&mut out).unwrap();
        seg.fill_into(&mut out).unwrap();
        let mut avg = vec![0.0f32; na];
        plain.read_into(&mut avg).unwrap();
        let out64: Vec<f64> = out.iter().map(|&v| f64::from(v)).collect();
        let avg64: Vec<f64> = avg.iter().map(|&v| f64::from(v)).collect();
        check_kept(&l, &xs64, &out64, &avg64)?;
        // SWA, the same steps in random chunks
        let seg = Segmented::new(Swa::new(vec![CompF32::ZERO; n]), l.clone(), vec![0.0f32; l.kept_len()]).unwrap();
        let mut c: Chunked<_, 4> = Chunked::new(seg, 1).unwrap();
        let mut plain = Swa::new(vec![CompF32::ZERO; na]);
        for (k, x) in xs.iter().enumerate() {
            c.begin(()).unwrap();
            for r in chunking(n, seed ^ k as u64) {
                c.update_chunk(r.start, &x[r]).unwrap();
            }
            c.finish().unwrap();
            plain.update(&gather(&l, x, Policy::Average)).unwrap();
        }
        let seg = c.get().unwrap();
        seg.inner().read_into(&mut out).unwrap();
        seg.fill_into(&mut out).unwrap();
        plain.read_into(&mut avg).unwrap();
        let out64: Vec<f64> = out.iter().map(|&v| f64::from(v)).collect();
        let avg64: Vec<f64> = avg.iter().map(|&v| f64::from(v)).collect();
        check_kept(&l, &xs64, &out64, &avg64)?;
    }

    /// FedAvg in Q15 with every policy: the averaged segments are the
    /// fixed-point average's bits; a counter segment adds the raw integers
    /// exactly (checked against i64), the others as in f32.
    #[test]
    fn q15_policies_match_their_references((lens, policies, _seed) in case(), models in prop::collection::vec(prop::collection::vec(q15_value(), 80), 1..6)) {
        let l = layout(&lens, &policies);
        let n = l.len();
        // counters: small raw integers, so that the sums fit
        let xs: Vec<Vec<Q15>> = models.iter().map(|m| m[..n].iter().enumerate().map(|(i, q)| {
            if l.segments().iter().any(|s| s.policy == Policy::Sum && s.range().contains(&i)) { Q15::from_bits(q.to_bits() / 8) } else { *q }
        }).collect()).collect();
        let na = n - l.kept_len();
        let mut seg = Segmented::new(WeightedAverage::new(vec![I49F15::ZERO; n]), l.clone(), vec![Q15::ZERO; l.kept_len()]).unwrap();
        let mut plain = WeightedAverage::new(vec![I49F15::ZERO; na]);
        for (k, x) in xs.iter().enumerate() {
            seg.update(k as u32 + 1, x).unwrap();
            plain.fold(&gather(&l, x, Policy::Average), k as u32 + 1).unwrap();
        }
        let mut out = vec![Q15::ZERO; n];
        seg.inner().finish(&mut out).unwrap();
        seg.fill_into(&mut out).unwrap();
        let mut avg = vec![Q15::ZERO; na];
        plain.finish(&mut avg).unwrap();
        let raw = |v: &[Q15]| -> Vec<f64> { v.iter().map(|q| f64::from(q.to_bits())).collect() };
        let xs64: Vec<Vec<f64>> = xs.iter().map(|x| raw(x)).collect();
        check_kept(&l, &xs64, &raw(&out), &raw(&avg))?;
    }
}

#[test]
fn a_sum_that_would_wrap_is_refused_and_nothing_changes() {
    let mut l: Layout<2> = Layout::new();
    l.push("w", 2).unwrap();
    l.push_with("count", 1, Policy::Sum).unwrap();
    let mut seg = Segmented::new(Swa::new([I49F15::ZERO; 3]), l, [Q15::ZERO; 1]).unwrap();
    let big = Q15::from_bits(30_000);
    seg.update((), &[Q15::ZERO, Q15::ZERO, big]).unwrap();
    let before = (
        seg.inner().accumulator().to_vec(),
        seg.kept().to_vec(),
        seg.steps(),
    );
    assert_eq!(
        seg.update((), &[Q15::from_num(0.5), Q15::ZERO, big]),
        Err(Error::OutOfRange { index: 2 })
    );
    assert_eq!(
        (
            seg.inner().accumulator().to_vec(),
            seg.kept().to_vec(),
            seg.steps()
        ),
        before
    );
    // f32: a NaN anywhere is refused before anything is applied
    let mut l: Layout<2> = Layout::new();
    l.push_with("stats", 1, Policy::CopyLatest).unwrap();
    l.push("w", 1).unwrap();
    let mut seg = Segmented::new(Ema::new([0.0f32; 2], 0.5).unwrap(), l, [0.0f32; 1]).unwrap();
    seg.update((), &[1.0, 1.0]).unwrap();
    assert_eq!(
        seg.update((), &[2.0, f32::NAN]),
        Err(Error::NonFinite { index: 1 })
    );
    assert_eq!(seg.kept(), &[1.0]);
    let mut out = [0.0f32; 2];
    assert_eq!(
        Segmented::new(
            Ema::new([0.0f32; 2], 0.5).unwrap(),
            Layout::<1>::single("w", 2).unwrap(),
            [0.0f32; 0]
        )
        .unwrap()
        .fill_into(&mut out),
        Err(Error::Empty)
    );
    assert!(matches!(
        Segmented::new(
            Ema::new([0.0f32; 3], 0.5).unwrap(),
            Layout::<1>::single("w", 2).unwrap(),
            [0.0f32; 0]
        ),
        Err(Error::LengthMismatch { .. })
    ));
}

/// Two-pass methods see only the averaged segments: a counter that
/// jumps does not trip NASWA's norm filter.
#[test]
fn norm_filters_ignore_kept_segments() {
    let mut l: Layout<2> = Layout::new();
    l.push("w", 3).unwrap();
    l.push_with("count", 1, Policy::Sum).unwrap();
    let mut wl: Layout<2> = Layout::new();
    wl.push("w", 3).unwrap();
    wl.push("count", 1).unwrap();
    let naswa = Naswa::new(vec![CompF32::ZERO; 4], wl, 0.2, NormScope::PerSegment).unwrap();
    let mut seg = Segmented::new(naswa, l, vec![0.0f32; 1]).unwrap();
    for k in 0..5 {
        seg.update((), &[1.0, 1.0, 1.0, (k * 1000) as f32]).unwrap();
    }
    assert_eq!(seg.inner().rejected(), 0);
    assert_eq!(seg.kept(), &[10_000.0]);
}

// ---- end to end ----------------------------------------------------------------

const D: usize = 8;
/// weights, bias, running mean and variance of the inputs, batches tracked
const N: usize = D + 1 + 2 * D + 1;

/// A client's model: a linear layer after a normalisation of its inputs
/// by running statistics (momentum 0.1, as BatchNorm keeps them), and the
/// count of batches that updated them.
struct Model {
    p: [f32; N],
}

impl Model {
    fn new() -> Self {
        let mut p = [0.0f32; N];
        p[D + 1 + D..D + 1 + 2 * D].fill(1.0); // running variance 1
        Self { p }
    }
    fn predict(p: &[f32], x: &[f32; D]) -> f32 {
        let (w, b) = (&p[..D], p[D]);
        let (m, v) = (&p[D + 1..D + 1 + D], &p[D + 1 + D..D + 1 + 2 * D]);
        (0..D)
            .map(|i| w[i] * (x[i] - m[i]) / (v[i] + 1e-5).sqrt())
            .sum::<f32>()
            + b
    }
}

/// The task: features with mean 3 and spread 2 per coordinate, target
/// linear in the standardised features.
fn sample(rng: &mut Rng, w_star: &[f32; D]) -> ([f32; D], f32) {
    let x: [f32; D] = core::array::from_fn(|_| 3.0 + 2.0 * rng.uniform() * 1.7320508);
    let z: f32 = (0..D).map(|i| w_star[i] * (x[i] - 3.0) / 2.0).sum();
    (x, z + 0.5 + 0.1 * rng.uniform())
}

fn risk(p: &[f32], w_star: &[f32; D]) -> f64 {
    let mut rng = Rng::new(999);
    (0..2000)
        .map(|_| {
            let (x, y) = sample(&mut rng, w_star);
            let e = f64::from(Model::predict(p, &x) - y);
            e * e
        })
        .sum::<f64>()
        / 2000.0
}

/// Trains from `start` on batches of 8: running statistics updated from
/// each batch, the counter advanced, SGD on the normalised inputs.
fn train(
    start: &[f32; N],
    seed: u64,
    batches: usize,
    w_star: &[f32; D],
    mut each: impl FnMut(&[f32; N]),
) -> Model {
    let mut rng = Rng::new(seed);
    let mut m = Model { p: *start };
    for _ in 0..batches {
        let batch: Vec<([f32; D], f32)> = (0..8).map(|_| sample(&mut rng, w_star)).collect();
        for i in 0..D {
            let mean = batch.iter().map(|(x, _)| x[i]).sum::<f32>() / 8.0;
            let var = batch
                .iter()
                .map(|(x, _)| (x[i] - mean).powi(2))
                .sum::<f32>()
                / 7.0;
            m.p[D + 1 + i] = 0.9 * m.p[D + 1 + i] + 0.1 * mean;
            m.p[D + 1 + D + i] = 0.9 * m.p[D + 1 + D + i] + 0.1 * var;
        }
        m.p[N - 1] += 1.0;
        for (x, y) in &batch {
            let err = Model::predict(&m.p, x) - y;
            for (i, &xi) in x.iter().enumerate() {
                let z = (xi - m.p[D + 1 + i]) / (m.p[D + 1 + D + i] + 1e-5).sqrt();
                m.p[i] -= 0.01 * err * z;
            }
            m.p[D] -= 0.01 * err;
        }
        each(&m.p);
    }
    m
}

fn model_layout(stats: Policy, count: Policy) -> Layout<4> {
    let mut l = Layout::new();
    l.push("fc.weight", D).unwrap();
    l.push("fc.bias", 1).unwrap();
    l.push_with("bn.running", 2 * D, stats).unwrap();
    l.push_with("bn.num_batches_tracked", 1, count).unwrap();
    l
}

#[test]
fn weights_statistics_and_a_counter_end_to_end() {
    let mut rng = Rng::new(5);
    let w_star: [f32; D] = core::array::from_fn(|_| rng.uniform());

    // FedAvg: 4 clients from a shared start; weights and statistics
    // averaged (weighted by batches), the counter summed.
    let start = Model::new().p;
    let batches = [150usize, 220, 90, 300];
    let clients: Vec<Model> = batches
        .iter()
        .enumerate()
        .map(|(k, &b)| train(&start, 100 + k as u64, b, &w_star, |_| {}))
        .collect();
    let mut fed = Segmented::new(
        WeightedAverage::new([CompF32::ZERO; N]),
        model_layout(Policy::Average, Policy::Sum),
        [0.0f32; 1],
    )
    .unwrap();
    for (c, &b) in clients.iter().zip(&batches) {
        fed.update(b as f32, &c.p).unwrap();
    }
    let mut global = [0.0f32; N];
    fed.inner().finish(&mut global).unwrap();
    fed.fill_into(&mut global).unwrap();
    let total: usize = batches.iter().sum();
    assert_eq!(
        global[N - 1],
        total as f32,
        "batches tracked: summed over clients"
    );
    // without the policy, the counter is averaged like a weight
    let mut naive = WeightedAverage::new([CompF32::ZERO; N]);
    for (c, &b) in clients.iter().zip(&batches) {
        naive.fold(&c.p, b as f32).unwrap();
    }
    let mut wrong = [0.0f32; N];
    naive.finish(&mut wrong).unwrap();
    assert!(wrong[N - 1] < total as f32 / 2.0);
    let client_risk: Vec<f64> = clients.iter().map(|c| risk(&c.p, &w_star)).collect();
    let global_risk = risk(&global, &w_star);
    // the averaged statistics sit near the features' true mean and variance
    for i in 0..D {
        assert!(
            (global[D + 1 + i] - 3.0).abs() < 0.5,
            "mean {i}: {}",
            global[D + 1 + i]
        );
        assert!(
            (global[D + 1 + D + i] - 4.0).abs() < 1.5,
            "var {i}: {}",
            global[D + 1 + D + i]
        );
    }
    let mean_client = client_risk.iter().sum::<f64>() / client_risk.len() as f64;
    assert!(
        global_risk < mean_client * 1.5,
        "FedAvg risk {global_risk} vs clients {mean_client}"
    );

    // EMA over one client's training. The weights are co-adapted with
    // the running statistics they were trained against (the bias follows
    // the batch-to-batch jitter of the running mean), so the averaged
    // weights go with averaged statistics; the counter follows the live
    // model (copied, never averaged).
    let mut ema = Segmented::new(
        Ema::new([CompF32::ZERO; N], 0.98).unwrap(),
        model_layout(Policy::Average, Policy::CopyLatest),
        [0.0f32; 1],
    )
    .unwrap();
    // the same EMA with the statistics copied from the live model
    let mut ema_copy = Segmented::new(
        Ema::new([CompF32::ZERO; N], 0.98).unwrap(),
        model_layout(Policy::CopyLatest, Policy::CopyLatest),
        [0.0f32; 2 * D + 1],
    )
    .unwrap();
    let last = train(&start, 7, 3000, &w_star, |p| {
        ema.update((), p).unwrap();
        ema_copy.update((), p).unwrap();
    });
    let read = |e: &dyn Fn(&mut [f32; N])| {
        let mut out = [0.0f32; N];
        e(&mut out);
        out
    };
    let avg = read(&|o| {
        ema.inner().read_into(o).unwrap();
        ema.fill_into(o).unwrap();
    });
    let copied = read(&|o| {
        ema_copy.inner().read_into(o).unwrap();
        ema_copy.fill_into(o).unwrap();
    });
    assert_eq!(avg[N - 1], 3000.0, "the counter follows the live model");
    assert_eq!(
        copied[D + 1..],
        last.p[D + 1..],
        "copied statistics are the live model's"
    );
    let (r_last, r_ema, r_copy) = (
        risk(&last.p, &w_star),
        risk(&avg, &w_star),
        risk(&copied, &w_star),
    );
    println!(
        "end to end: FedAvg risk {global_risk:.3e} (clients {mean_client:.3e}), batches tracked {} (averaged: {:.1}); EMA risk {r_ema:.3e} (statistics copied instead: {r_copy:.3e}) vs last iterate {r_last:.3e}",
        global[N - 1],
        wrong[N - 1]
    );
    assert!(r_ema < r_last, "EMA {r_ema} vs last {r_last}");

    // task arithmetic keeps the last model's statistics
    let mut ta = Segmented::new(
        TaskArithmetic::new([CompF32::ZERO; N]),
        model_layout(Policy::CopyLatest, Policy::Sum),
        [0.0f32; 2 * D + 1],
    )
    .unwrap();
    for c in &clients {
        ta.update((0.25, None), (&c.p, &start)).unwrap();
    }
    assert_eq!(ta.kept()[..2 * D], clients[3].p[D + 1..N - 1]);
    assert_eq!(ta.kept()[2 * D], total as f32);
}

/// A segmented state saves and restores whole (the average, the steps,
/// the kept values); a record made under other policies is refused and
/// changes nothing.
#[test]
fn segmented_state_round_trips() {
    use polyak::codec::Persist;
    let layout = |count: Policy| model_layout(Policy::Average, count);
    let make = |count| {
        Segmented::new(
            Ema::new([CompF32::ZERO; N], 0.9).unwrap(),
            layout(count),
            [0.0f32; 1],
        )
        .unwrap()
    };
    let mut a = make(Policy::Sum);
    let mut rng = Rng::new(3);
    for _ in 0..5 {
        let x: Vec<f32> = (0..N)
            .map(|i| if i == N - 1 { 1.0 } else { rng.uniform() })
            .collect();
        a.update((), &x).unwrap();
    }
    let mut rec = vec![0u8; a.encoded_len()];
    a.encode(&mut rec).unwrap();
    let mut b = make(Policy::Sum);
    b.decode(&rec).unwrap();
    assert_eq!((b.steps(), b.kept()), (5, &[5.0f32][..]));
    let mut again = vec![0u8; b.encoded_len()];
    b.encode(&mut again).unwrap();
    assert_eq!(again, rec);
    let mut c = make(Policy::Max);
    assert_eq!(c.decode(&rec), Err(Error::LayoutMismatch));
    assert_eq!(c.steps(), 0);
}
