//! Measures each kernel's worst error against the f64 reference on long
//! SGD-like trajectories (a random walk plus noise, per element) and prints
//! it beside the documented bound, as a Markdown table.
//!
//! ```text
//! cargo run --release -p polyak-host --example accuracy
//! ```

use demo::rng::Rng;
use polyak::{CompF32, Ema, I1F31, I2F62, I33F31, I49F15, Q15, Q31, Swa, merge};
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
}
