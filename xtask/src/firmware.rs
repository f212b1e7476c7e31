//! Building the firmware example, running it under QEMU and decoding its
//! defmt output.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, ensure_targets, root, run};

/// A QEMU board the firmware runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Board {
    /// MPS2-AN386, Cortex-M4F, 32 weights.
    Mps2An386,
    /// BBC micro:bit, Cortex-M0 (soft float), 16 weights.
    Microbit,
}

impl Board {
    pub(crate) const ALL: [Board; 2] = [Board::Mps2An386, Board::Microbit];

    pub(crate) fn target(self) -> &'static str {
        match self {
            Board::Mps2An386 => "thumbv7em-none-eabihf",
            Board::Microbit => "thumbv6m-none-eabi",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Board::Mps2An386 => "Cortex-M4F (MPS2-AN386)",
            Board::Microbit => "Cortex-M0 (micro:bit)",
        }
    }

    /// Weights of the model the firmware trains on this board.
    pub(crate) fn weights(self) -> usize {
        match self {
            Board::Mps2An386 => 32,
            Board::Microbit => 16,
        }
    }

    fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Board::Mps2An386 => &["-cpu", "cortex-m4", "-machine", "mps2-an386"],
            Board::Microbit => &["-machine", "microbit"],
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Board> {
        match s {
            "m4" | "mps2" | "mps2-an386" | "cortex-m4" => Some(Board::Mps2An386),
            "m0" | "microbit" | "cortex-m0" => Some(Board::Microbit),
            _ => None,
        }
    }
}

/// What a firmware run printed, decoded, and how it exited.
pub(crate) struct Output {
    pub(crate) lines: Vec<String>,
    pub(crate) exit_code: Option<i32>,
}

/// One decoded record: `kind key=value …`.
pub(crate) struct Record {
    pub(crate) kind: String,
    pub(crate) fields: BTreeMap<String, String>,
}

impl Record {
    pub(crate) fn parse(line: &str) -> Record {
        let mut words = line.split_whitespace();
        let kind = words.next().unwrap_or_default().to_string();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Record { kind, fields }
    }

    pub(crate) fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }

    pub(crate) fn num(&self, key: &str) -> f64 {
        self.get(key).parse().unwrap_or(f64::NAN)
    }
}

fn firmware_dir() -> PathBuf {
    root().join("firmware-example")
}

/// Builds the firmware for `board` and returns the ELF's path.
pub(crate) fn build(board: Board, release: bool) -> Result<PathBuf> {
    build_with(board, release, None)
}

/// Builds the firmware with its benchmark mode (a separate target
/// directory, so it never replaces the demo's ELF) and returns the path.
pub(crate) fn build_bench(board: Board) -> Result<PathBuf> {
    build_with(board, true, Some("bench"))
}

/// The release firmware with the flash-backed EMA mode.
pub(crate) fn build_paged(board: Board) -> Result<PathBuf> {
    build_with(board, true, Some("paged"))
}

fn build_with(board: Board, release: bool, feature: Option<&str>) -> Result<PathBuf> {
    ensure_targets(&[board.target()])?;
    let target_dir = match feature {
        Some(f) => firmware_dir().join("target").join(f),
        None => firmware_dir().join("target"),
    };
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(firmware_dir())
        .args(["build", "--target", board.target()])
        .arg("--target-dir")
        .arg(&target_dir);
    if release {
        c.arg("--release");
    }
    if let Some(f) = feature {
        c.args(["--features", f]);
    }
    let what = match feature {
        Some(f) => format!("build firmware ({f}) for {}", board.name()),
        None => format!("build firmware for {}", board.name()),
    };
    run(&what, c)?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir
        .join(board.target())
        .join(profile)
        .join("polyak-firmware-example"))
}

/// Makes sure `qemu-system-arm` is there: installs it with apt-get when
/// running as root on Debian/Ubuntu, otherwise says what to install.
pub(crate) fn ensure_qemu() -> Result {
    if Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let has_apt = Command::new("apt-get").arg("--version").output().is_ok();
    if is_root && has_apt {
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        run("apt-get update", update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-qq", "qemu-system-arm"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run("apt-get install qemu-system-arm", install)?;
        return Ok(());
    }
    Err("qemu-system-arm not found: install it (Debian/Ubuntu: `sudo apt-get install qemu-system-arm`, \
         Fedora: `sudo dnf install qemu-system-arm`, macOS: `brew install qemu`)"
        .into())
}

/// Runs `elf` under QEMU (deterministic instruction counting, semihosting
/// to stdout), with a timeout, and decodes the defmt stream.
pub(crate) fn run_qemu(board: Board, elf: &PathBuf, timeout: Duration) -> Result<Output> {
    run_qemu_with(board, elf, timeout, &root(), "")
}

/// As [`run_qemu`], in directory `cwd` (where semihosting files go) and
/// with `append` as the command line the firmware can read.
pub(crate) fn run_qemu_with(
    board: Board,
    elf: &PathBuf,
    timeout: Duration,
    cwd: &std::path::Path,
    append: &str,
) -> Result<Output> {
    ensure_qemu()?;
    let bytes = std::fs::read(elf).map_err(|e| format!("read {}: {e}", elf.display()))?;
    let table = defmt_decoder::Table::parse(&bytes)
        .map_err(|e| format!("defmt table: {e}"))?
        .ok_or("the ELF has no .defmt section")?;

    let mut child = Command::new("qemu-system-arm")
        .args(board.qemu_args())
        .args(["-nographic", "-monitor", "none", "-serial", "null"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0,align=off,sleep=off"])
        .arg("-kernel")
        .arg(elf)
        .args(if append.is_empty() {
            vec![]
        } else {
            vec!["-append", append]
        })
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start qemu-system-arm: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout from QEMU")?;
    let reader = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let _ = stdout.read_to_end(&mut raw);
        raw
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("QEMU timed out after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let raw = reader.join().map_err(|_| "reader thread failed")?;

    let mut decoder = table.new_stream_decoder();
    decoder.received(&raw);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => lines.push(frame.display_message().to_string()),
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                return Err("malformed defmt frame in the firmware output".into());
            }
        }
    }
    Ok(Output {
        lines,
        exit_code: status.code(),
    })
}

fn fmt_risk(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.3e}")
    }
}

/// Prints the decoded run as tables.
pub(crate) fn print_report(board: Board, out: &Output) {
    println!("polyak on-device learning on {}", board.name());
    for line in &out.lines {
        let r = Record::parse(line);
        match r.kind.as_str() {
            "info" => {
                println!(
                    "{} weights, {} B of parameter and averager buffers (static), {} seeds",
                    r.get("weights"),
                    r.get("buffers").trim_end_matches('B'),
                    r.get("seeds")
                );
                println!("excess risk E[((w - w*)·x)²] on a held-out set\n");
            }
            "config" => {
                println!(
                    "seed {}: {} SGD steps, lr {}, EMA β {}, SWA from step {}, Switch EMA every {} steps, window of the last {} snapshots taken every {} steps",
                    r.get("seed"),
                    r.get("steps"),
                    r.get("lr"),
                    r.get("beta"),
                    r.get("swa_from"),
                    r.get("switch_every"),
                    r.get("window"),
                    r.get("window_every")
                );
                println!(
                    "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                    "step",
                    "last iter",
                    "EMA f32",
                    "EMA Q15",
                    "SWA",
                    "Switch",
                    "window",
                    "act mean",
                    "act var"
                );
            }
            "row" => println!(
                "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                r.get("step"),
                fmt_risk(r.num("last")),
                fmt_risk(r.num("ema")),
                fmt_risk(r.num("ema_q15")),
                fmt_risk(r.num("swa")),
                fmt_risk(r.num("switch")),
                fmt_risk(r.num("window")),
                fmt_risk(r.num("act_mean")),
                fmt_risk(r.num("act_var"))
            ),
            "sum" => println!(
                "  checksums: ema {} ema_q15 {} swa {} switch {} window {} stats {} last {}",
                r.get("ema"),
                r.get("ema_q15"),
                r.get("swa"),
                r.get("switch"),
                r.get("window"),
                r.get("stats"),
                r.get("last")
            ),
            "result" => println!(
                "  EMA / last iterate = {:.3}   SWA / last iterate = {:.3}   window / last iterate = {:.3}   {}\n",
                r.num("ema_over_last"),
                r.num("swa_over_last"),
                r.num("window_over_last"),
                if r.get("ema_wins") == "true" {
                    "EMA below the last iterate"
                } else {
                    "EMA NOT below the last iterate"
                }
            ),
            "done" => println!(
                "all checks {} (exit status {})",
                if r.get("ok") == "true" {
                    "passed"
                } else {
                    "FAILED"
                },
                out.exit_code.map_or("none".to_string(), |c| c.to_string())
            ),
            _ => println!("{line}"),
        }
    }
}
