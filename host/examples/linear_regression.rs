//! The on-device learning run of the firmware example, on the host: online
//! SGD at a constant learning rate on a simulated sensor stream, with an
//! f32 EMA, a Q15 EMA (wide shadow), an SWA over the second half and a
//! Switch EMA. Prints the excess risk of the last iterate and of each
//! average over training, for several seeds.
//!
//! ```text
//! cargo run --release -p polyak-host --example linear_regression
//! ```

use demo::sensor::{Sensor, SimSensor};
use demo::train::{Buffers, Config, Row, run};

const D: usize = 32;
const SEEDS: [u64; 4] = [1, 2, 3, 4];

fn fmt(r: f32) -> String {
    if r.is_nan() {
        "-".into()
    } else {
        format!("{r:.3e}")
    }
}

fn main() {
    println!("online SGD, linear regression, {D} weights, constant learning rate");
    println!("excess risk E[((w - w*)·x)²] on a held-out set\n");
    let mut wins = 0;
    for seed in SEEDS {
        let cfg = Config::new(seed);
        let sim = SimSensor::<D>::new(seed, cfg.noise);
        let w_star = *sim.w_star();
        let mut sensor = Sensor::new(sim).expect("simulated sensor answers");
        let mut bufs = Box::new(Buffers::<D>::new());
        println!(
            "seed {seed}  (lr {}, β {}, SWA from step {})",
            cfg.lr,
            cfg.beta,
            cfg.steps / 2 + 1
        );
        println!(
            "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "step", "last", "ema f32", "ema q15", "swa", "switch"
        );
        let summary = run(&cfg, &mut sensor, &w_star, &mut bufs, |r: &Row| {
            println!(
                "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10}",
                r.step,
                fmt(r.last),
                fmt(r.ema),
                fmt(r.ema_q15),
                fmt(r.swa),
                fmt(r.switch)
            );
        })
        .expect("run completes");
        let r = summary.last_row;
        let win = r.ema < r.last;
        wins += usize::from(win);
        println!(
            "  EMA / last iterate = {:.3}, SWA / last iterate = {:.3}  {}\n",
            r.ema / r.last,
            r.swa / r.last,
            if win {
                "(EMA better)"
            } else {
                "(EMA NOT better)"
            }
        );
    }
    println!(
        "EMA ended below the last iterate for {wins} of {} seeds",
        SEEDS.len()
    );
    if wins != SEEDS.len() {
        std::process::exit(1);
    }
}
