//! Every aggregator on the linear-regression task: clients train the same
//! 16-weight model by SGD from a shared base on their own shards of
//! `y = w*·x + noise`, and the server merges them. Prints each method's
//! excess risk `E[((w − w*)·x)²] = ‖w − w*‖²/3` (features uniform in
//! [−1, 1]) beside the clients' mean, and checks the averaging methods
//! improve on a typical client.

use demo::rng::Rng;
use polyak::aggregate::{
    Drop, DualAveraging, Fisher, FisherAcc, MaskedAverage, Participation, TaskArithmetic, Ties,
    TiesAcc, VarianceCorrected, WeightedAverage, median, trimmed_mean,
};
use polyak::layout::Layout;
use polyak::{CompF32, I16F16, I49F15, Q15, merge};

const D: usize = 16;
const K: usize = 8;

/// `‖w − w*‖²/3`.
fn risk(w: &[f32], w_star: &[f32; D]) -> f64 {
    w.iter()
        .zip(w_star)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum::<f64>()
        / 3.0
}

struct Client {
    w: [f32; D],
    /// Σ x² per feature over the shard (a diagonal Fisher / precision).
    fisher: [f32; D],
    /// Σ of the gradients at the base (the feedback dual averaging sums).
    grad: [f32; D],
    samples: u32,
}

/// A client: SGD from `base` on its own shard.
fn train(seed: u64, base: &[f32; D], w_star: &[f32; D], samples: u32, mask: &[bool; D]) -> Client {
    let mut rng = Rng::new(seed);
    let mut w = *base;
    let mut fisher = [0.0f32; D];
    let mut grad = [0.0f32; D];
    for _ in 0..samples {
        let x: [f32; D] = core::array::from_fn(|i| if mask[i] { rng.uniform() } else { 0.0 });
        let y: f32 = x.iter().zip(w_star).map(|(a, b)| a * b).sum::<f32>() + 0.3 * rng.uniform();
        let pred: f32 = x.iter().zip(&w).map(|(a, b)| a * b).sum();
        let pred0: f32 = x.iter().zip(base).map(|(a, b)| a * b).sum();
        for i in 0..D {
            w[i] += 0.05 * (y - pred) * x[i];
            fisher[i] += x[i] * x[i];
            grad[i] += (pred0 - y) * x[i] / samples as f32;
        }
    }
    Client {
        w,
        fisher,
        grad,
        samples,
    }
}

#[test]
fn every_method_on_the_linear_regression_task() {
    let mut rng = Rng::new(2024);
    let w_star: [f32; D] = core::array::from_fn(|_| 0.5 * rng.uniform());
    // a "pretrained" base near the optimum, which the clients fine-tune
    let base: [f32; D] = core::array::from_fn(|i| w_star[i] + 0.2 * rng.uniform());
    let dense = [true; D];
    let clients: Vec<Client> = (0..K)
        .map(|k| train(100 + k as u64, &base, &w_star, 200 + 50 * k as u32, &dense))
        .collect();
    let models: Vec<&[f32]> = clients.iter().map(|c| &c.w[..]).collect();
    let client_risk = clients.iter().map(|c| risk(&c.w, &w_star)).sum::<f64>() / K as f64;
    let best_client = clients
        .iter()
        .map(|c| risk(&c.w, &w_star))
        .fold(f64::INFINITY, f64::min);
    let base_risk = risk(&base, &w_star);
    println!("base {base_risk:.3e}, clients: mean {client_risk:.3e}, best {best_client:.3e}");
    let mut rows: Vec<(&str, f64)> = Vec::new();
    let mut out = [0.0f32; D];

    // 1. FedAvg with example counts, f32 and Q15; a uniform soup
    let mut fedavg = WeightedAverage::new([CompF32::ZERO; D]);
    let mut fed15 = WeightedAverage::new([I49F15::ZERO; D]);
    let mut soup = WeightedAverage::new([CompF32::ZERO; D]);
    for c in &clients {
        fedavg.fold(&c.w, c.samples as f32).unwrap();
        let q: [Q15; D] = core::array::from_fn(|i| Q15::saturating_from_num(c.w[i]));
        fed15.fold(&q, c.samples).unwrap();
        soup.fold_uniform(&c.w).unwrap();
    }
    fedavg.finish(&mut out).unwrap();
    rows.push(("FedAvg (f32, counts)", risk(&out, &w_star)));
    let mut q = [Q15::ZERO; D];
    fed15.finish(&mut q).unwrap();
    let qf: Vec<f32> = q.iter().map(|v| v.to_num::<f32>()).collect();
    rows.push(("FedAvg (Q15, counts)", risk(&qf, &w_star)));
    soup.finish(&mut out).unwrap();
    rows.push(("uniform soup", risk(&out, &w_star)));

    // 2. per-segment interpolation from the base to the soup
    let mut layout: Layout<2> = Layout::new();
    layout.push("first", D / 2).unwrap();
    layout.push("second", D / 2).unwrap();
    let soup_w = out;
    merge::interpolate_segments(&base, &soup_w, &layout, &[1.0, 0.9], &mut out).unwrap();
    rows.push(("WiSE-FT per segment (1.0, 0.9)", risk(&out, &w_star)));

    // 3. Fisher and precision-weighted merging
    let mut fisher = Fisher::new([FisherAcc::ZERO; D], 1e-6).unwrap();
    let mut precision = Fisher::new([FisherAcc::ZERO; D], 1e-6).unwrap();
    for c in &clients {
        fisher.fold(&c.w, &c.fisher).unwrap();
        precision.fold_delta(&c.w, &base, &c.fisher).unwrap();
    }
    fisher.finish(&mut out).unwrap();
    rows.push(("Fisher-weighted", risk(&out, &w_star)));
    precision.finish_delta(&base, &[1.0; D], &mut out).unwrap();
    rows.push(("precision-weighted (H₀ = 1)", risk(&out, &w_star)));

    // 4. task arithmetic (λ = 1/K: the average), DARE, TIES, slerp
    let mut ta = TaskArithmetic::new([CompF32::ZERO; D]);
    let mut dare = TaskArithmetic::new([CompF32::ZERO; D]);
    let mut ties = Ties::new([TiesAcc::default(); D]);
    for (k, c) in clients.iter().enumerate() {
        ta.fold(&c.w, &base, 1.0).unwrap();
        dare.fold_dare(
            &c.w,
            &base,
            1.0,
            Drop {
                rate: 0.3,
                seed: 9,
                model: k as u32,
            },
        )
        .unwrap();
        ties.fold(&c.w, &base, 0.7).unwrap();
    }
    ta.finish(&base, 1.0 / K as f32, &mut out).unwrap();
    rows.push(("task arithmetic, λ = 1/K", risk(&out, &w_star)));
    dare.finish(&base, 1.0 / K as f32, &mut out).unwrap();
    rows.push(("DARE (drop 0.3), λ = 1/K", risk(&out, &w_star)));
    ties.finish(&base, 1.0, &mut out).unwrap();
    rows.push(("TIES (density 0.7), λ = 1", risk(&out, &w_star)));
    merge::slerp(&clients[0].w, &clients[1].w, 0.5, &mut out).unwrap();
    rows.push(("slerp of two clients, t = 0.5", risk(&out, &w_star)));

    // 5. sparse models sharing a mask
    let mask: [bool; D] = core::array::from_fn(|i| i % 4 != 3);
    let sparse_star: [f32; D] = core::array::from_fn(|i| if mask[i] { w_star[i] } else { 0.0 });
    let sparse_base: [f32; D] = core::array::from_fn(|i| if mask[i] { base[i] } else { 0.0 });
    let sparse: Vec<Client> = (0..K)
        .map(|k| train(300 + k as u64, &sparse_base, &sparse_star, 300, &mask))
        .collect();
    let mut masked = MaskedAverage::new([CompF32::ZERO; D], [0u32; 1]).unwrap();
    for c in &sparse {
        masked.fold(&c.w, 1.0).unwrap();
    }
    masked.finish(&mut out).unwrap();
    assert!(out.iter().zip(&mask).all(|(v, &m)| m || *v == 0.0));
    let sparse_clients = sparse.iter().map(|c| risk(&c.w, &sparse_star)).sum::<f64>() / K as f64;
    let sparse_risk = risk(&out, &sparse_star);
    println!("sparse soup: clients {sparse_clients:.3e}, merged {sparse_risk:.3e} (mask kept)");
    assert!(sparse_risk < sparse_clients);

    // 6. variance correction (here it restores the clients' spread, which
    // does not help a convex problem: printed, not asserted)
    let mut vc = VarianceCorrected::new([CompF32::ZERO; D], layout.clone()).unwrap();
    for c in &clients {
        vc.fold(&c.w).unwrap();
    }
    vc.finish(&mut out).unwrap();
    let vc_risk = risk(&out, &w_star);

    // 7. inverse-distance weights around the base
    let mut ida = WeightedAverage::new([CompF32::ZERO; D]);
    for c in &clients {
        ida.fold_inverse_distance(&c.w, &base, 1e-3).unwrap();
    }
    ida.finish(&mut out).unwrap();
    rows.push(("IDA (reference: base)", risk(&out, &w_star)));

    // 8. FedAU: clients take part at different rates; each round's update
    // is x + (1/K)·Σ ω_k·(θ_k − x)
    let mut part: Participation<K> = Participation::new(16).unwrap();
    let mut global = base;
    for round in 0..24u64 {
        let who: Vec<usize> = (0..K)
            .filter(|&k| round % (k as u64 % 3 + 1) == 0)
            .collect();
        part.record_round(&who).unwrap();
        let mut step = TaskArithmetic::new([CompF32::ZERO; D]);
        for &k in &who {
            let c = train(1000 * round + k as u64, &global, &w_star, 60, &dense);
            step.fold(&c.w, &global, part.weight(k).unwrap()).unwrap();
        }
        let g = global;
        step.finish(&g, 1.0 / K as f32, &mut global).unwrap();
    }
    rows.push((
        "FedAU, 24 rounds of partial participation",
        risk(&global, &w_star),
    ));

    // 9. robust statistics with one faulty client
    let faulty = [5.0f32; D];
    let mut with_faulty = models.clone();
    with_faulty.push(&faulty);
    median(&with_faulty, &mut out).unwrap();
    rows.push(("median, one faulty client", risk(&out, &w_star)));
    trimmed_mean(&with_faulty, 1, &mut out).unwrap();
    rows.push(("trimmed mean (1), one faulty client", risk(&out, &w_star)));
    let mut plain = WeightedAverage::new([CompF32::ZERO; D]);
    for m in &with_faulty {
        plain.fold_uniform(m).unwrap();
    }
    plain.finish(&mut out).unwrap();
    let poisoned = risk(&out, &w_star);

    // 10. dual averaging of the clients' gradients at the base, arriving
    // in any order: x = −z/β with β = K / step
    let mut da = DualAveraging::new([CompF32::ZERO; D]);
    for c in clients.iter().rev() {
        da.add(&c.grad).unwrap();
    }
    da.readout_around(&base, K as f32 / 1.5, &mut out).unwrap();
    let da_risk = risk(&out, &w_star);
    let mut da15 = DualAveraging::new([I49F15::ZERO; D]);
    for c in &clients {
        let g: [Q15; D] = core::array::from_fn(|i| Q15::saturating_from_num(c.grad[i]));
        da15.add(&g).unwrap();
    }
    let mut q = [Q15::ZERO; D];
    let base15: [Q15; D] = core::array::from_fn(|i| Q15::saturating_from_num(base[i]));
    da15.readout_around(&base15, I16F16::from_num(K as f32 / 1.5), &mut q)
        .unwrap();
    let qf: Vec<f32> = q.iter().map(|v| v.to_num::<f32>()).collect();

    println!("{:<44} {:>10}", "method", "risk");
    for (name, r) in &rows {
        println!("{name:<44} {r:>10.3e}");
        assert!(r.is_finite());
        // every averaging method beats the mean client
        assert!(
            *r < client_risk,
            "{name}: {r:.3e} not below the clients' mean {client_risk:.3e}"
        );
    }
    println!(
        "{:<44} {vc_risk:>10.3e}",
        "variance-corrected (spread restored)"
    );
    println!("{:<44} {poisoned:>10.3e}", "plain mean, one faulty client");
    println!(
        "{:<44} {da_risk:>10.3e}",
        "dual averaging, one step from the base"
    );
    println!(
        "{:<44} {:>10.3e}",
        "dual averaging (Q15)",
        risk(&qf, &w_star)
    );
    assert!(vc_risk.is_finite());
    // the robust statistics shrug off the faulty client; the mean does not
    assert!(poisoned > 10.0 * rows.iter().find(|r| r.0.starts_with("median")).unwrap().1);
    // one dual-averaging step from the base improves on the base
    assert!(da_risk < base_risk && risk(&qf, &w_star) < base_risk);
}
