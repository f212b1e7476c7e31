//! Host-vs-device bit exactness: the firmware's training run recomputed on
//! the host with the same kernels and the same seeded sensor stream; every
//! averaged buffer's checksum must match the one the device printed.

use demo::sensor::{Sensor, SimSensor};
use demo::train::{Buffers, Checksums, Config, run};

use crate::Result;
use crate::firmware::{self, Board, Output, Record};

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
                for (key, want) in host.named() {
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
                    "  {} seed {seed}: last, ema, ema_q15 (+shadow), swa, switch, window, stats: device == host",
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

/// Power loss and restart: run the firmware's persistence mode until step
/// `stop` (it commits a checkpoint every 1000 steps to emulated flash backed
/// by a host file), then run it again: it must restore that checkpoint and
/// finish with exactly the checksums of an uninterrupted run.
pub(crate) fn check_persistence(elf: &std::path::PathBuf, timeout: std::time::Duration) -> Result {
    let board = Board::Mps2An386;
    let dir = crate::root().join("target").join("persist-e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stop = 6000;
    let first =
        firmware::run_qemu_with(board, elf, timeout, &dir, &format!("persist stop={stop}"))?;
    let second = firmware::run_qemu_with(board, elf, timeout, &dir, "persist")?;
    let has = |out: &Output, prefix: &str| out.lines.iter().any(|l| l.starts_with(prefix));
    if first.exit_code != Some(0) || !has(&first, &format!("persist stopped step={stop}")) {
        return Err(format!(
            "first run did not stop at {stop}: {:?}\n{}",
            first.exit_code,
            first.lines.join("\n")
        ));
    }
    let restored = second
        .lines
        .iter()
        .find(|l| l.starts_with("persist restored=true"))
        .cloned()
        .unwrap_or_default();
    if second.exit_code != Some(0) || Record::parse(&restored).get("step") != stop.to_string() {
        return Err(format!(
            "second run did not restore step {stop}: {:?}\n{}",
            second.exit_code,
            second.lines.join("\n")
        ));
    }
    let host = host_checksums(board, 1)?;
    let sum = second
        .lines
        .iter()
        .map(|l| Record::parse(l))
        .find(|r| r.kind == "sum")
        .ok_or("no checksums after the restart")?;
    for (key, want) in host.named() {
        if sum.get(key) != format!("{want:#010x}") {
            return Err(format!(
                "after the restart `{key}` differs from an uninterrupted run: device {}, host {want:#010x}",
                sum.get(key)
            ));
        }
    }
    println!(
        "  stopped at step {stop}, restarted: {restored}; checksums after the restart == an uninterrupted run"
    );
    Ok(())
}

/// The flash-backed EMA: the firmware's `paged` mode keeps a second f32
/// EMA of seed 1's weights in emulated NOR flash, updated page by page
/// through one RAM page; it must end with the RAM EMA's checksum (which
/// the host recomputes), and it reports the RAM and flash it used.
pub(crate) fn check_paged(elf: &std::path::PathBuf, timeout: std::time::Duration) -> Result {
    let board = Board::Mps2An386;
    let dir = crate::root().join("target").join("paged-e2e");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = firmware::run_qemu_with(board, elf, timeout, &dir, "paged")?;
    let line = out
        .lines
        .iter()
        .find(|l| l.starts_with("paged "))
        .cloned()
        .ok_or_else(|| {
            format!(
                "no `paged` line: {:?}\n{}",
                out.exit_code,
                out.lines.join("\n")
            )
        })?;
    let rec = Record::parse(&line);
    let host = host_checksums(board, 1)?;
    if out.exit_code != Some(0)
        || rec.get("same_as_ram") != "true"
        || rec.get("ema") != format!("{:#010x}", host.ema)
    {
        return Err(format!(
            "flash-backed EMA differs from the RAM EMA (host {:#010x}): {line}",
            host.ema
        ));
    }
    println!("  {line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use demo::train::{Checkpoint, Trainer};
    use polyak::codec::Persist;

    /// The same resume on the host: encode a checkpoint halfway, decode it
    /// into a fresh trainer, finish; the checksums match an uninterrupted
    /// run.
    #[test]
    fn checkpoint_resumes_bit_for_bit() {
        const D: usize = 32;
        let cfg = Config::new(1);
        let sim = SimSensor::<D>::new(cfg.seed, cfg.noise);
        let w_star = *sim.w_star();
        let mut sensor = Sensor::new(sim).unwrap();
        let mut bufs = Box::new(Buffers::<D>::new());
        let mut t = Trainer::new(&cfg, &mut bufs).unwrap();
        for _ in 0..5000 {
            t.advance(&mut sensor, &w_star, |_| {}).unwrap();
        }
        let pos = sensor.bus().stream_state();
        let ck = Checkpoint {
            trainer: &mut t,
            sensor: pos,
        };
        let mut rec = vec![0u8; ck.encoded_len()];
        ck.encode(&mut rec).unwrap();

        let mut bufs2 = Box::new(Buffers::<D>::new());
        let mut t2 = Trainer::new(&cfg, &mut bufs2).unwrap();
        let mut ck2 = Checkpoint {
            trainer: &mut t2,
            sensor: 0,
        };
        ck2.decode(&rec).unwrap();
        let pos2 = ck2.sensor;
        // a corrupt record changes nothing
        let mut bad = rec.clone();
        bad[100] ^= 1;
        assert_eq!(
            Checkpoint {
                trainer: &mut t2,
                sensor: 0
            }
            .decode(&bad),
            Err(polyak::Error::BadChecksum)
        );
        let mut sensor2 = Sensor::new(SimSensor::<D>::new(cfg.seed, cfg.noise)).unwrap();
        sensor2.bus_mut().set_stream_state(pos2);
        assert_eq!(t2.step(), 5000);
        while !t2.done() {
            t2.advance(&mut sensor2, &w_star, |_| {}).unwrap();
        }
        let resumed = t2.summary::<()>().unwrap().checksums;
        assert_eq!(resumed, host_run::<D>(1).unwrap());
    }
}
