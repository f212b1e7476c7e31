//! Measures each kernel's worst error against the f64 reference on long
//! SGD-like trajectories (a random walk plus noise, per element) and prints
//! it beside the documented bound, as a Markdown table.
//!
//! ```text
//! cargo run --release -p polyak-host --example accuracy
//! ```

use demo::rng::Rng;
use polyak::ema::Rounding;
use polyak::schedule::Schedule;
use polyak::{CompF32, Ema, I1F15, I1F31, I2F62, I33F31, I49F15, Q15, Q15Ef, Q31, Swa, merge};
use polyak_host::bounds;
use polyak_host::metrics::{EPS, LSB15, LSB31};
use polyak_host::reference;

const N: usize = 16;

/// `steps` inputs of `N` elements: a slow random walk plus noise, in
/// `[-scale, scale]`-ish.
fn trajectory(seed: u64, steps: usize, scale: f32) -> Vec<[f32; N]> {
    let mut rng = Rng::new(seed);
    let mut walk = [0.0f32; N];
    (0..steps)
        .map(|_| {
            core::array::from_fn(|i| {
                walk[i] = (walk[i] + 0.002 * rng.uniform()).clamp(-0.8, 0.8);
                (walk[i] + 0.1 * rng.uniform()) * scale
            })
        })
        .collect()
}

/// Worst `|read − ref|` over all steps and elements, in units of `unit(M)`,
/// and the worst bound in the same units.
struct Worst {
    err: f64,
    bound: f64,
}

fn ema_f32<A: polyak::EmaShadow<Param = f32, Coef = f32>>(
    mut ema: Ema<A, Vec<A>>,
    xs: &[[f32; N]],
    bound: impl Fn(f64, f64, u64) -> f64,
) -> Worst {
    let alpha = f64::from(ema.alpha());
    let debiased = ema.init() == polyak::Init::ZeroDebiased;
    let mut r = if debiased {
        reference::Ema::new_debiased(N, alpha)
    } else {
        reference::Ema::new(N, alpha)
    };
    let mut out = [0.0f32; N];
    let mut w = Worst {
        err: 0.0,
        bound: 0.0,
    };
    for x in xs {
        ema.update(x).expect("valid input");
        r.update(&x.map(f64::from));
        ema.read_into(&mut out).expect("read");
        for (i, (o, want)) in out.iter().zip(r.value()).enumerate() {
            let m = r.max_abs()[i];
            w.err = w.err.max((f64::from(*o) - want).abs() / (EPS * m));
            w.bound = w.bound.max(bound(m, alpha, r.steps()) / (EPS * m));
        }
    }
    w
}

fn steps_for(beta: f32) -> usize {
    let alpha = 1.0 - f64::from(beta);
    ((8.0 / alpha) as usize).clamp(20_000, 800_000)
}

fn main() {
    println!("| kernel | β | steps | documented bound | measured worst |");
    println!("|---|---|---|---|---|");
    for beta in [0.5f32, 0.9, 0.99, 0.999, 0.9999, 0.99999] {
        let steps = steps_for(beta);
        let xs = trajectory(u64::from(beta.to_bits()), steps, 1.0);
        let rows = [
            (
                "EMA f32 plain",
                ema_f32(Ema::new(vec![0.0f32; N], beta).unwrap(), &xs, |m, a, _| {
                    bounds::ema_plain(m, a)
                }),
            ),
            (
                "EMA f32 compensated",
                ema_f32(
                    Ema::new(vec![CompF32::ZERO; N], beta).unwrap(),
                    &xs,
                    |m, a, _| bounds::ema_comp(m, a),
                ),
            ),
            (
                "EMA f32 compensated, debiased",
                ema_f32(
                    Ema::new_debiased(vec![CompF32::ZERO; N], beta).unwrap(),
                    &xs,
                    bounds::ema_comp_debiased,
                ),
            ),
        ];
        for (name, w) in rows {
            println!(
                "| {name} | {beta} | {steps} | {:.2} ε·M | {:.3} ε·M |",
                w.bound, w.err
            );
        }
        // plain debiased: its bound grows with t, report it at the end
        let w = ema_f32(
            Ema::new_debiased(vec![0.0f32; N], beta).unwrap(),
            &xs,
            bounds::ema_plain_debiased,
        );
        println!(
            "| EMA f32 plain, debiased | {beta} | {steps} | {:.2} ε·M | {:.3} ε·M |",
            w.bound, w.err
        );

        // Q15 in, Q31 shadow; and Q31 in, Q62 shadow
        let q15: Vec<[Q15; N]> = xs.iter().map(|x| x.map(Q15::saturating_from_num)).collect();
        let mut e = Ema::new(vec![I1F31::ZERO; N], beta).unwrap();
        let alpha = e.alpha().to_num::<f64>();
        let mut r = reference::Ema::new(N, alpha);
        let mut out = [Q15::ZERO; N];
        let mut worst = 0.0f64;
        for x in &q15 {
            e.update(x).unwrap();
            r.update(&x.map(|v| v.to_num::<f64>()));
            e.read_into(&mut out).unwrap();
            for (o, want) in out.iter().zip(r.value()) {
                worst = worst.max((o.to_num::<f64>() - want).abs() / LSB15);
            }
        }
        println!(
            "| EMA Q15 (Q31 shadow) | {beta} | {steps} | {:.3} LSB | {worst:.3} LSB |",
            bounds::ema_q15(alpha)
        );

        let q31: Vec<[Q31; N]> = xs.iter().map(|x| x.map(Q31::saturating_from_num)).collect();
        let mut e = Ema::new(vec![I2F62::ZERO; N], beta).unwrap();
        let alpha = e.alpha().to_num::<f64>();
        let mut r = reference::Ema::new(N, alpha);
        let mut out = [Q31::ZERO; N];
        let mut worst = 0.0f64;
        let mut own = 0.0f64;
        for x in &q31 {
            e.update(x).unwrap();
            r.update(&x.map(|v| v.to_num::<f64>()));
            e.read_into(&mut out).unwrap();
            for (i, (o, want)) in out.iter().zip(r.value()).enumerate() {
                worst = worst.max((o.to_num::<f64>() - want).abs() / LSB31);
                own = own.max(r.own_error(i) / LSB31);
            }
        }
        println!(
            "| EMA Q31 (Q62 shadow) | {beta} | {steps} | {:.3} LSB (+{own:.3} f64 reference) | {worst:.3} LSB |",
            bounds::ema_q31(alpha)
        );
    }

    // SWA: 10^6 snapshots
    for (name, offset) in [("same sign", 1.0f32), ("mixed sign", 0.0)] {
        let xs = trajectory(7, 1_000_000, 1.0);
        let mut swa = Swa::new(vec![CompF32::ZERO; N]);
        let mut r = reference::Mean::new(N);
        for x in &xs {
            let x = x.map(|v| v + offset);
            swa.update(&x).unwrap();
            r.update(&x.map(f64::from));
        }
        let mut out = [0.0f32; N];
        swa.read_into(&mut out).unwrap();
        let (want, mean_abs) = (r.value(), r.mean_abs());
        let (mut err, mut bound) = (0.0f64, 0.0f64);
        for i in 0..N {
            err = err.max((f64::from(out[i]) - want[i]).abs() / (EPS * mean_abs[i]));
            bound =
                bound.max(bounds::swa_f32(want[i], mean_abs[i], r.count()) / (EPS * mean_abs[i]));
        }
        println!(
            "| SWA f32 ({name}) | - | 10⁶ | {bound:.3} ε·mean\\|x\\| | {err:.3} ε·mean\\|x\\| |"
        );
    }
    let xs = trajectory(8, 100_000, 1.0);
    let mut s15 = Swa::new(vec![I49F15::ZERO; N]);
    let mut s31 = Swa::new(vec![I33F31::ZERO; N]);
    let mut r15 = reference::Mean::new(N);
    let mut r31 = reference::Mean::new(N);
    for x in &xs {
        let q = x.map(Q15::saturating_from_num);
        let q31 = x.map(Q31::saturating_from_num);
        s15.update(&q).unwrap();
        s31.update(&q31).unwrap();
        r15.update(&q.map(|v| v.to_num::<f64>()));
        r31.update(&q31.map(|v| v.to_num::<f64>()));
    }
    let (mut o15, mut o31) = ([Q15::ZERO; N], [Q31::ZERO; N]);
    s15.read_into(&mut o15).unwrap();
    s31.read_into(&mut o31).unwrap();
    let w15 = o15
        .iter()
        .zip(r15.value())
        .map(|(o, w)| (o.to_num::<f64>() - w).abs() / LSB15)
        .fold(0.0, f64::max);
    let w31 = o31
        .iter()
        .zip(r31.value())
        .map(|(o, w)| (o.to_num::<f64>() - w).abs() / LSB31)
        .fold(0.0, f64::max);
    println!("| SWA Q15 | - | 10⁵ | 0.5 LSB | {w15:.3} LSB |");
    println!("| SWA Q31 | - | 10⁵ | 0.5 LSB | {w31:.3} LSB |");

    // weighted average of K models with random weights
    let mut rng = Rng::new(99);
    let (mut err, mut bound) = (0.0f64, 0.0f64);
    for k in 2..=16usize {
        for _ in 0..200 {
            let models: Vec<Vec<f32>> = (0..k)
                .map(|_| (0..N).map(|_| rng.uniform()).collect())
                .collect();
            let weights: Vec<f32> = (0..k).map(|_| 0.5 * (rng.uniform() + 1.0)).collect();
            let refs: Vec<&[f32]> = models.iter().map(|m| m.as_slice()).collect();
            let mut out = [0.0f32; N];
            merge::weighted_average(&refs, &weights, &mut out).unwrap();
            let wd: Vec<f64> = weights.iter().map(|&w| f64::from(w)).collect();
            for i in 0..N {
                let xs: Vec<f64> = models.iter().map(|m| f64::from(m[i])).collect();
                let want = reference::weighted_average(&xs, &wd);
                let m = xs.iter().fold(0.0f64, |a, x| a.max(x.abs()));
                err = err.max((f64::from(out[i]) - want).abs() / (EPS * m));
                bound = bound.max(bounds::weighted_f32(want, m, k) / (EPS * m));
            }
        }
    }
    println!(
        "| weighted average f32, K = 2..16 | - | 3000 merges | {bound:.3} ε·M | {err:.3} ε·M |"
    );
    schedules();
    rounding_modes();
    swa_family();
    aggregators();
}

/// Worst error of each f32 aggregator as a share of its documented bound,
/// over random models (K = 2 … 12, 64 elements, values in [−4, 4), a
/// quarter of the trials near a common offset of 1000).
// Parallel per-element arrays (outputs, models, references) read best by index.
#[allow(clippy::needless_range_loop)]
fn aggregators() {
    use polyak::aggregate::{
        Drop, DualAveraging, Fisher, FisherAcc, TaskArithmetic, Ties, TiesAcc, WeightedAverage,
        median, trimmed_mean,
    };
    use polyak_host::dd::Dd;
    use polyak_host::metrics::ETA;
    use polyak_host::reference::aggregate as r;

    const M: usize = 64;
    let mut rng = Rng::new(77);
    let mut worst = [0.0f64; 9];
    let names = [
        (
            "weighted average / FedAvg",
            "ε·(1.5·\\|ref\\| + M) + (K/W + 1)·η",
        ),
        ("Fisher-weighted", "ε·(1.5·\\|ref\\| + M) + (K/W + 1)·η"),
        (
            "precision-weighted",
            "ε·(½·\\|ref\\| + 1.5·\\|Δ\\| + D) + (K/W + 1)·η",
        ),
        (
            "task arithmetic",
            "ε·(½·\\|ref\\| + \\|λ\\|·(½·\\|S\\| + 1.5·A))·(1 + ε) + (\\|λ\\|·K + 1)·η",
        ),
        ("task arithmetic + DARE (rate 0.5)", "same"),
        (
            "TIES (density 0.5)",
            "ε·(½·\\|ref\\| + \\|λ\\|·(1.5·\\|μ\\| + n·ε·max\\|d\\|)) + η",
        ),
        ("median (even K)", "ε/2·\\|ref\\| + η"),
        ("trimmed mean (trim 1)", "ε·\\|ref\\| + n·ε²·M + η"),
        (
            "dual averaging readout",
            "ε·\\|ref\\| + n·ε²·Σ\\|g\\|/β + η",
        ),
    ];
    for trial in 0..400usize {
        let k = 2 + trial % 11;
        let offset = if trial % 4 == 0 { 1000.0 } else { 0.0 };
        let models: Vec<Vec<f32>> = (0..k)
            .map(|_| (0..M).map(|_| offset + 4.0 * rng.uniform()).collect())
            .collect();
        let base: Vec<f32> = (0..M).map(|_| offset + 4.0 * rng.uniform()).collect();
        let ws: Vec<f32> = (0..k).map(|_| 2.0 * (rng.uniform() + 1.0)).collect();
        let fs: Vec<Vec<f32>> = (0..k)
            .map(|_| (0..M).map(|_| 50.0 * (rng.uniform() + 1.0)).collect())
            .collect();
        let col = |i: usize| -> Vec<f64> { models.iter().map(|m| f64::from(m[i])).collect() };
        let err = |got: f32, want: Dd| (Dd::from(got) - want).abs().to_f64();
        let kf = k as f64;
        let mut out = vec![0.0f32; M];

        let mut avg = WeightedAverage::new(vec![CompF32::ZERO; M]);
        let mut fisher = Fisher::new(vec![FisherAcc::ZERO; M], 1e-3).unwrap();
        let mut prec = Fisher::new(vec![FisherAcc::ZERO; M], 1e-3).unwrap();
        let mut ta = TaskArithmetic::new(vec![CompF32::ZERO; M]);
        let mut dare = TaskArithmetic::new(vec![CompF32::ZERO; M]);
        let mut ties = Ties::new(vec![TiesAcc::default(); M]);
        let mut da = DualAveraging::new(vec![CompF32::ZERO; M]);
        for (j, m) in models.iter().enumerate() {
            avg.fold(m, ws[j]).unwrap();
            fisher.fold(m, &fs[j]).unwrap();
            prec.fold_delta(m, &base, &fs[j]).unwrap();
            ta.fold(m, &base, ws[j] - 2.0).unwrap();
            dare.fold_dare(
                m,
                &base,
                ws[j] - 2.0,
                Drop {
                    rate: 0.5,
                    seed: trial as u64,
                    model: j as u32,
                },
            )
            .unwrap();
            ties.fold(m, &base, 0.5).unwrap();
            da.add(m).unwrap();
        }
        let wd: Vec<f64> = ws.iter().map(|&w| f64::from(w)).collect();
        let w2: Vec<f64> = ws.iter().map(|&w| f64::from(w - 2.0)).collect();
        let total: f64 = wd.iter().sum();
        let lambda = 0.7f32;
        let beta = 3.0f32;

        avg.finish(&mut out).unwrap();
        for i in 0..M {
            let xs = col(i);
            let want = r::weighted(&xs, &wd);
            let m = xs.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            let b = EPS * (1.5 * want.abs().to_f64() + m) + (kf / total + 1.0) * ETA;
            worst[0] = worst[0].max(err(out[i], want) / b);
        }
        fisher.finish(&mut out).unwrap();
        for i in 0..M {
            let xs = col(i);
            let f: Vec<f64> = fs.iter().map(|f| f64::from(f[i])).collect();
            let want = r::fisher(&xs, &f, 1e-3);
            let m = xs.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            let w: f64 = f.iter().sum();
            let b = EPS * (1.5 * want.abs().to_f64() + m) + (kf / w + 1.0) * ETA;
            worst[1] = worst[1].max(err(out[i], want) / b);
        }
        let h0 = vec![1.0f32; M];
        prec.finish_delta(&base, &h0, &mut out).unwrap();
        for i in 0..M {
            let xs = col(i);
            let f: Vec<f64> = fs.iter().map(|f| f64::from(f[i])).collect();
            let b0 = f64::from(base[i]);
            let want = r::precision(b0, &xs, &f, 1.0, 1e-3);
            let d = xs.iter().fold(0.0f64, |a, x| a.max((x - b0).abs()));
            let delta = (want - Dd::from(b0)).abs().to_f64();
            let w = 1.0 + f.iter().sum::<f64>();
            let b = EPS * (0.5 * want.abs().to_f64() + 1.5 * delta + d) + (kf / w + 1.0) * ETA;
            worst[2] = worst[2].max(err(out[i], want) / b);
        }
        for (slot, t, drop) in [(3usize, &ta, None), (4, &dare, Some((0.5, trial as u64)))] {
            t.finish(&base, lambda, &mut out).unwrap();
            for i in 0..M {
                let (want, s, a) =
                    r::task(f64::from(base[i]), &col(i), &w2, f64::from(lambda), drop, i);
                let l = f64::from(lambda);
                let b = EPS
                    * (0.5 * want.abs().to_f64() + l * (0.5 * s.abs().to_f64() + 1.5 * a))
                    * (1.0 + EPS)
                    + (l * kf + 1.0) * ETA;
                worst[slot] = worst[slot].max(err(out[i], want) / b);
            }
        }
        ties.finish(&base, lambda, &mut out).unwrap();
        let bd: Vec<f64> = base.iter().map(|&x| f64::from(x)).collect();
        let md: Vec<Vec<f64>> = models
            .iter()
            .map(|m| {
                m.iter()
                    .zip(&base)
                    .map(|(&t, &b)| f64::from(b) + f64::from(t - b))
                    .collect()
            })
            .collect();
        for (i, (w, mu, n)) in r::ties(&bd, &md, 0.5, f64::from(lambda))
            .into_iter()
            .enumerate()
        {
            let dmax = md.iter().fold(0.0f64, |a, m| a.max((m[i] - bd[i]).abs()));
            let b = EPS
                * (0.5 * w.abs() + f64::from(lambda) * (1.5 * mu.abs() + n as f64 * EPS * dmax))
                + ETA;
            worst[5] = worst[5].max((f64::from(out[i]) - w).abs() / b);
        }
        let refs: Vec<&[f32]> = models.iter().map(|m| m.as_slice()).collect();
        if k % 2 == 0 {
            median(&refs, &mut out).unwrap();
            for i in 0..M {
                let want = r::median(&col(i));
                worst[6] =
                    worst[6].max((f64::from(out[i]) - want).abs() / (EPS / 2.0 * want.abs() + ETA));
            }
        }
        if k > 2 {
            trimmed_mean(&refs, 1, &mut out).unwrap();
            for i in 0..M {
                let xs = col(i);
                let want = r::trimmed_mean(&xs, 1);
                let m = xs.iter().fold(0.0f64, |a, x| a.max(x.abs()));
                let b = EPS * want.abs().to_f64() + (kf - 2.0) * EPS * EPS * m + ETA;
                worst[7] = worst[7].max(err(out[i], want) / b);
            }
        }
        da.readout(beta, &mut out).unwrap();
        for i in 0..M {
            let xs = col(i);
            let want = -(Dd::sum(xs.iter().copied()) / Dd::from(f64::from(beta)));
            let l1: f64 = xs.iter().map(|x| x.abs()).sum();
            let b = EPS * want.abs().to_f64() + kf * EPS * EPS * l1 / f64::from(beta) + ETA;
            worst[8] = worst[8].max(err(out[i], want) / b);
        }
    }
    println!();
    println!("| aggregator (f32) | documented bound | measured worst (share of the bound) |");
    println!("|---|---|---|");
    for ((name, bound), w) in names.iter().zip(worst) {
        println!("| {name} | `{bound}` | {w:.2} |");
    }
}

/// The sliding window's f32 drift, the f32 moments' variance error and
/// the SWA learning-rate curve, each against its documented bound.
fn swa_family() {
    use polyak::moments::{MomentF32, Moments};
    use polyak::swalr::{Anneal, Rate, SwaSchedule};
    use polyak::window::{RamRing, Window};
    use polyak_host::dd::Dd;
    use polyak_host::metrics::ETA;

    println!();
    println!("| SWA family | setting | documented bound | measured worst (share of the bound) |");
    println!("|---|---|---|---|");
    let steps = 100_000;
    let xs = trajectory(21, steps, 1.0);
    for (k, resum) in [(8usize, None), (64, None), (64, Some(1000u64))] {
        let ring = RamRing::new(vec![0.0f32; (k + 1) * N], N).unwrap();
        let mut w = Window::new(vec![CompF32::ZERO; N], ring, k).unwrap();
        if let Some(r) = resum {
            w = w.with_resum_every(std::num::NonZeroU64::new(r).unwrap());
        }
        let (mut m, mut worst, mut since) = (0.0f64, 0.0f64, 0u64);
        let mut out = [0.0f32; N];
        for (t, x) in xs.iter().enumerate() {
            w.update(x).unwrap();
            m = x.iter().fold(m, |a, v| a.max(f64::from(*v).abs()));
            if t >= k {
                since += 1;
            }
            if resum.is_some_and(|r| since >= r) {
                since = 0;
            }
            w.read_into(&mut out).unwrap();
            let lo = (t + 1).saturating_sub(k);
            for i in 0..N {
                let n = (t + 1 - lo) as f64;
                let mean = Dd::sum(xs[lo..=t].iter().map(|r| f64::from(r[i]))) / Dd::from(n);
                let err = (Dd::from(out[i]) - mean).abs().to_f64();
                let b = EPS * mean.abs().to_f64()
                    + (since as f64 + k as f64 / 2.0) * EPS * EPS * m
                    + ETA;
                worst = worst.max(err / b);
            }
        }
        let setting = match resum {
            None => format!("k = {k}, 10⁵ slides"),
            Some(r) => format!("k = {k}, 10⁵ slides, re-sum every {r}"),
        };
        println!("| window f32 | {setting} | `ε·\\|mean\\| + (s + k/2)·ε²·M + η` | {worst:.2} |");
    }

    // variance of values with a large offset and a small spread
    let mut worst = 0.0f64;
    for (offset, spread) in [
        (0.0f32, 1.0f32),
        (1000.0, 1.0e-3),
        (3.0, 1.0e-2),
        (-50.0, 0.5),
    ] {
        let data: Vec<[f32; N]> = xs[..4096]
            .iter()
            .map(|r| core::array::from_fn(|i| offset + spread * r[i]))
            .collect();
        let mut mo = Moments::new(vec![MomentF32::ZERO; N]);
        for r in &data {
            mo.update(r).unwrap();
        }
        let mut var = [0.0f32; N];
        mo.variance_into(&mut var, 1).unwrap();
        let n = data.len() as f64;
        for i in 0..N {
            let col: Vec<f64> = data.iter().map(|r| f64::from(r[i])).collect();
            let mean = Dd::sum(col.iter().copied()) / Dd::from(n);
            let sq = |c: Dd| {
                col.iter().fold(Dd::ZERO, |s, &x| {
                    let d = Dd::from(x) - c;
                    s + d * d
                })
            };
            let rv = sq(mean) / Dd::from(n - 1.0);
            let q = (sq(Dd::from(col[0])) / Dd::from(n)).to_f64();
            let err = (Dd::from(var[i]) - rv).abs().to_f64();
            worst = worst.max(err / (3.0 * EPS * q * n / (n - 1.0) + ETA));
        }
    }
    println!(
        "| moments f32, variance | 4096 values, offsets 0 … 1000, spreads 10⁻³ … 1 | `3·ε·Q·n/(n − 1) + η` | {worst:.2} |"
    );

    // the SWA learning rate
    let mut worst = [0.0f64; 3];
    for (lr_train, lr_avg) in [
        (0.1f32, 0.01f32),
        (0.05, 0.05),
        (1.0, 1.0e-4),
        (3.0e-3, 0.2),
    ] {
        for steps in [0u32, 1, 7, 100, 999] {
            for (j, shape) in [Anneal::Linear, Anneal::Cosine].into_iter().enumerate() {
                let s = SwaSchedule {
                    start: 10,
                    every: 1,
                    lr_train,
                    rate: Rate::Anneal {
                        lr_avg,
                        steps,
                        shape,
                    },
                };
                let unit = EPS * f64::from(lr_train.max(lr_avg));
                for t in 10..(10 + u64::from(steps) + 3) {
                    let want = polyak_host::reference::swalr::anneal(
                        t - 10,
                        steps,
                        f64::from(lr_train),
                        f64::from(lr_avg),
                        j == 1,
                    );
                    let err = (f64::from(s.lr(t)) - want).abs() / unit;
                    worst[j] = worst[j].max(err / f64::from(s.lr_rel_error()));
                }
            }
        }
        for cycle in [1u32, 2, 5, 64] {
            let s = SwaSchedule {
                start: 1,
                every: 1,
                lr_train,
                rate: Rate::Cyclic {
                    high: lr_train,
                    low: lr_avg,
                    cycle,
                },
            };
            let unit = EPS * f64::from(lr_train.max(lr_avg));
            for t in 1..300u64 {
                let want = polyak_host::reference::swalr::cyclic(
                    t - 1,
                    cycle,
                    f64::from(lr_train),
                    f64::from(lr_avg),
                );
                let err = (f64::from(s.lr(t)) - want).abs() / unit;
                worst[2] = worst[2].max(err / f64::from(s.lr_rel_error()));
            }
        }
    }
    println!(
        "| SWA rate, linear anneal | 4 rate pairs, 0 … 999 steps | 2 ε·max lr | {:.2} |",
        worst[0]
    );
    println!(
        "| SWA rate, cosine anneal | 4 rate pairs, 0 … 999 steps | 4 ε·max lr | {:.2} |",
        worst[1]
    );
    println!(
        "| SWA rate, cyclic | 4 rate pairs, cycles 1 … 64 | 2 ε·max lr | {:.2} |",
        worst[2]
    );
}

/// Worst relative error of α_t against the f64 formula over a sweep of
/// each schedule's parameters.
fn schedules() {
    use polyak_host::reference::schedule as refs;
    println!();
    println!("| schedule | documented α_t bound | measured worst |");
    println!("|---|---|---|");
    let ts: Vec<u64> = (1..2000).chain((1..40).map(|k| 1u64 << k)).collect();
    let worst = |s: Schedule, f: &dyn Fn(u64) -> f64| {
        ts.iter()
            .map(|&t| ((f64::from(s.alpha(t)) - f(t)) / f(t)).abs() / EPS)
            .fold(0.0, f64::max)
    };
    let mut w = 0.0f64;
    for k in 0..1000 {
        let beta = k as f32 / 1000.0;
        w = w.max(worst(Schedule::constant(beta), &|_| {
            refs::constant(f64::from(beta))
        }));
    }
    println!("| constant β ∈ [0, 1) | 0.5 ε | {w:.2} ε |");
    let mut w = 0.0f64;
    for g in [0.1f32, 0.5, 1.0, 3.0, 10.0, 100.0] {
        for p in [0.25f32, 2.0 / 3.0, 0.75, 1.0, 2.0] {
            let s = Schedule::warmup(g, p, 0.0, 0.99999);
            let b = f64::from(s.decay.alpha_rel_error());
            let e = worst(s, &|t| {
                refs::warmup(t, f64::from(g), f64::from(p), 0.0, f64::from(0.99999f32))
            });
            w = w.max(e / b);
        }
    }
    println!("| warmup, γ ∈ [0.1, 100], p ∈ [0.25, 2] | (1 + 1.5·p) ε | {w:.2} of the bound |");
    let mut w = 0.0f64;
    for h in [1.0f32, 7.0, 100.0, 1e4, 1e6, 1e9] {
        w = w.max(worst(Schedule::half_life_steps(h), &|_| {
            refs::half_life(f64::from(h), 1.0)
        }));
    }
    println!("| half-life h ∈ [1, 10⁹] steps | 3 ε | {w:.2} ε |");
    let mut w = 0.0f64;
    for g in [0.0f32, 1.0, 6.94, 16.97, 50.0, 100.0] {
        w = w.max(worst(Schedule::power(g), &|t| refs::power(t, f64::from(g))));
    }
    println!("| power function, γ ∈ [0, 100], t ≤ 2⁴⁰ | 4 ε | {w:.2} ε |");
    println!("| shift 2⁻ᵏ | exact | exact |");
}

/// The Q15 EMA's rounding modes on a slow drift (1 LSB per 40 steps).
fn rounding_modes() {
    println!();
    println!("| Q15 EMA form | β | documented bound | measured worst |");
    println!("|---|---|---|---|");
    let drift = |t: usize| {
        Q15::from_bits((-8000 + (t / 40) as i32 + [0, 3, -2, 5, -4, 1, -1, 2][t % 8]) as i16)
    };
    for beta in [0.999f32, 0.9999] {
        let steps = 2_000_000;
        let alpha = Ema::new([I1F31::ZERO; 1], beta)
            .unwrap()
            .alpha()
            .to_num::<f64>();
        let mut naive = polyak_host::naive::Q15Ema::new(1, f64::from(beta));
        let sr = Rounding::Stochastic { seed: 0x5eed };
        let mut wide = Ema::new([I1F31::ZERO; 1], beta).unwrap();
        let mut wide_sr = Ema::new([I1F31::ZERO; 1], beta)
            .unwrap()
            .with_rounding(sr)
            .unwrap();
        let mut ef = Ema::new([Q15Ef::ZERO; 1], beta).unwrap();
        let mut narrow = Ema::new([I1F15::ZERO; 1], beta).unwrap();
        let mut narrow_sr = Ema::new([I1F15::ZERO; 1], beta)
            .unwrap()
            .with_rounding(sr)
            .unwrap();
        let mut r = reference::Ema::new(1, alpha);
        let mut worst = [0.0f64; 6];
        let mut o = [Q15::ZERO];
        for t in 0..steps {
            let x = drift(t);
            naive.update(&[x]);
            r.update(&[x.to_num::<f64>()]);
            let want = r.value()[0];
            worst[0] = worst[0].max((naive.value()[0].to_num::<f64>() - want).abs() / LSB15);
            for (k, e) in [&mut wide, &mut wide_sr].into_iter().enumerate() {
                e.update(&[x]).unwrap();
                e.read_into(&mut o).unwrap();
                worst[1 + k] = worst[1 + k].max((o[0].to_num::<f64>() - want).abs() / LSB15);
            }
            ef.update(&[x]).unwrap();
            ef.read_into(&mut o).unwrap();
            worst[3] = worst[3].max((o[0].to_num::<f64>() - want).abs() / LSB15);
            for (k, e) in [&mut narrow, &mut narrow_sr].into_iter().enumerate() {
                e.update(&[x]).unwrap();
                e.read_into(&mut o).unwrap();
                worst[4 + k] = worst[4 + k].max((o[0].to_num::<f64>() - want).abs() / LSB15);
            }
        }
        let rows = [
            (
                "naive Q15 shadow, truncating",
                "none (stalls)".to_string(),
                worst[0],
            ),
            (
                "Q31 shadow, nearest-even",
                format!("{:.3} LSB", bounds::ema_q15(alpha)),
                worst[1],
            ),
            (
                "Q31 shadow, stochastic",
                format!("{:.3} LSB", 0.5 + 2f64.powi(-16) / alpha),
                worst[2],
            ),
            (
                "Q15 + error feedback",
                format!("{:.3} LSB", bounds::ema_q15(alpha)),
                worst[3],
            ),
            (
                "Q15 shadow, nearest-even",
                format!("{:.0} LSB", 0.5 / alpha),
                worst[4],
            ),
            (
                "Q15 shadow, stochastic",
                format!("{:.0} LSB (unbiased)", 1.0 / alpha),
                worst[5],
            ),
        ];
        for (name, bound, w) in rows {
            println!("| {name} | {beta} | {bound} | {w:.3} LSB |");
        }
    }
}
