//! Host-vs-device bit exactness: the firmware's training run recomputed on
//! the host with the same kernels and the same seeded sensor stream; every
//! averaged buffer's checksum must match the one the device printed.

use demo::sensor::{Sensor, SimSensor};
use demo::train::{Buffers, Checksums, Config, run};

use crate::Result;
use crate::firmware::{Board, Output, Record};

fn host_run<const D: usize>(seed: u64) -> Result<Checksums> {
    let cfg = Config::new(seed);
    let sim = SimSensor::<D>::new(seed, cfg.noise);
    let w_star = *sim.w_star();
    let mut sensor = Sensor::new(sim).map_err(|e| format!("host sensor: {e:?}"))?;
    let mut bufs = Box::new(Buffers::<D>::new());
    let summary = run(&cfg, &mut sensor, &w_star, &mut bufs, |_| {})
        .map_err(|e| format!("host run, seed {seed}: {e:?}"))?;
    Ok(summary.checksums)
}

fn host_checksums(board: Board, seed: u64) -> Result<Checksums> {
    match board.weights() {
        32 => host_run::<32>(seed),
        16 => host_run::<16>(seed),
        n => Err(format!("no host run for {n} weights")),
    }
}

/// Checks the device's exit status, the EMA-beats-last-iterate result of
/// every seed, and every checksum against the host's recomputation.
pub(crate) fn check(board: Board, out: &Output) -> Result {
    if out.exit_code != Some(0) {
        return Err(format!(
            "{}: firmware exited with {:?}; output:\n{}",
            board.name(),
            out.exit_code,
            out.lines.join("\n")
        ));
    }
    let mut seeds = 0;
    for line in &out.lines {
        let r = Record::parse(line);
        match r.kind.as_str() {
            "error" => return Err(format!("{}: {line}", board.name())),
            "result" if r.get("ema_wins") != "true" => {
                return Err(format!(
                    "{}: EMA not below the last iterate: {line}",
                    board.name()
                ));
            }
            "sum" => {
                let seed: u64 = r
                    .get("seed")
                    .parse()
                    .map_err(|_| format!("bad seed in {line}"))?;
                let host = host_checksums(board, seed)?;
                let pairs = [
                    ("last", host.last),
                    ("ema", host.ema),
                    ("ema_q15", host.ema_q15),
                    ("ema_q15_shadow", host.ema_q15_shadow),
                    ("swa", host.swa),
                    ("switch", host.switch),
                ];
                for (key, want) in pairs {
                    let got = r.get(key);
                    let want = format!("{want:#010x}");
                    if got != want {
                        return Err(format!(
                            "{}: seed {seed}: `{key}` differs: device {got}, host {want}",
                            board.name()
                        ));
                    }
                }
                println!(
                    "  {} seed {seed}: last, ema, ema_q15 (+shadow), swa, switch: device == host",
                    board.name()
                );
                seeds += 1;
            }
            _ => {}
        }
    }
    if seeds == 0 {
        return Err(format!("{}: no checksums in the output", board.name()));
    }
    Ok(())
}
