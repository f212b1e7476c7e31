//! `cargo xtask …`: the one place that knows how to drive the checks, the
//! cross builds and (for the firmware) QEMU.
//!
//! ```text
//! cargo xtask demo [m4|m0]   build the firmware, run it under QEMU, print the table
//! cargo xtask size           .text of each kernel in the release firmware
//! cargo xtask test           fmt, clippy, tests, docs, no_std cross builds,
//!                            and the QEMU end-to-end bit-exactness test
//! ```

mod bench;
mod e2e;
mod firmware;
mod size;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use firmware::Board;

/// Seconds of each fuzz target in `cargo xtask test`.
const FUZZ_SMOKE_SECS: u64 = 20;

/// Longest a QEMU run may take before it is killed.
const QEMU_TIMEOUT: Duration = Duration::from_secs(300);

/// The no_std targets the core crate must build for.
const THUMB_TARGETS: [&str; 3] = [
    "thumbv6m-none-eabi",
    "thumbv7em-none-eabihf",
    "thumbv8m.main-none-eabihf",
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("size") => size::size(),
        Some("bench") => bench::bench(),
        Some("demo") => match args.get(1).map(|b| Board::parse(b)) {
            None => demo(Board::Mps2An386),
            Some(Some(board)) => demo(board),
            Some(None) => Err("unknown board: use m4 (MPS2-AN386) or m0 (micro:bit)".into()),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  \
                 demo [m4|m0]  on-device learning under QEMU (default m4)\n  \
                 size          code size of each kernel in the release firmware\n  \
                 test          every check, including the QEMU end-to-end test"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub(crate) fn run(what: &str, mut cmd: Command) -> Result {
    eprintln!("\n== {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: failed ({status})"))
    }
}

/// Adds any missing rustup target (the toolchain file lists them too, but
/// an already-installed toolchain does not pick new targets up by itself).
pub(crate) fn ensure_targets(targets: &[&str]) -> Result {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add"])
        .args(&missing)
        .current_dir(root());
    run(&format!("rustup target add {}", missing.join(" ")), cmd)
}

fn test() -> Result {
    ensure_targets(&THUMB_TARGETS)?;

    let mut c = cargo();
    c.args(["fmt", "--all", "--check"]);
    run("cargo fmt --check", c)?;
    for manifest in [
        "firmware-example/Cargo.toml",
        "xtask/panic-check/Cargo.toml",
    ] {
        let mut c = cargo();
        c.args(["fmt", "--check", "--manifest-path", manifest]);
        run(&format!("cargo fmt --check ({manifest})"), c)?;
    }

    let mut c = cargo();
    c.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy -D warnings", c)?;

    let mut c = cargo();
    c.args(["test", "--workspace"]);
    run("cargo test --workspace", c)?;

    let mut c = cargo();
    c.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("cargo doc -D warnings", c)?;
    let mut c = cargo();
    c.args(["doc", "-p", "polyak", "--no-deps", "--no-default-features"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("cargo doc -D warnings (polyak without default features)", c)?;

    for target in THUMB_TARGETS {
        for features in [&["--no-default-features"][..], &["--features", "defmt"][..]] {
            let mut c = cargo();
            c.args(["build", "--release", "-p", "polyak", "--target", target])
                .args(features);
            run(&format!("polyak for {target} {}", features.join(" ")), c)?;
        }
    }
    let mut c = cargo();
    c.args([
        "clippy",
        "--release",
        "--manifest-path",
        "firmware-example/Cargo.toml",
    ])
    .args([
        "--target",
        Board::Mps2An386.target(),
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy (firmware, thumbv7em)", c)?;
    // the assembly kernels exist on thumbv7em only
    let mut c = cargo();
    c.args([
        "clippy",
        "--release",
        "-p",
        "polyak",
        "--target",
        Board::Mps2An386.target(),
    ])
    .args(["--", "-D", "warnings"]);
    run("cargo clippy (polyak, thumbv7em: the assembly kernels)", c)?;
    let mut c = cargo();
    c.args([
        "clippy",
        "--release",
        "--manifest-path",
        "firmware-example/Cargo.toml",
    ])
    .args(["--features", "bench", "--target", Board::Mps2An386.target()])
    .args(["--", "-D", "warnings"]);
    run("cargo clippy (firmware with its benchmark mode)", c)?;

    // Every public entry point, linked for Cortex-M4F with a panic handler
    // that cannot be linked: a panic path anywhere is a link error.
    let panic_check = root().join("xtask").join("panic-check");
    let mut c = cargo();
    c.current_dir(&panic_check)
        .args(["clippy", "--release", "--", "-D", "warnings"]);
    run("cargo clippy (panic check)", c)?;
    let mut c = cargo();
    c.current_dir(&panic_check).args(["build", "--release"]);
    run(
        "link-time panic check: every public entry point, thumbv7em, panic-never",
        c,
    )?;

    fuzz_smoke(FUZZ_SMOKE_SECS)?;

    // The debug firmware keeps a panic handler that reports and exits
    // non-zero; it must build and pass too.
    let elf = firmware::build(Board::Mps2An386, false)?;
    eprintln!(
        "\n== QEMU end-to-end, debug build, on {}",
        Board::Mps2An386.name()
    );
    let out = firmware::run_qemu(Board::Mps2An386, &elf, QEMU_TIMEOUT)?;
    e2e::check(Board::Mps2An386, &out)?;

    // A power loss and a restart from the emulated flash.
    let elf = firmware::build(Board::Mps2An386, true)?;
    eprintln!(
        "\n== QEMU persistence: stop, restart, resume ({})",
        Board::Mps2An386.name()
    );
    e2e::check_persistence(&elf, QEMU_TIMEOUT)?;
    eprintln!(
        "\n== QEMU flash-backed EMA: the shadow in emulated flash, one RAM page ({})",
        Board::Mps2An386.name()
    );
    let paged = firmware::build_paged(Board::Mps2An386)?;
    e2e::check_paged(&paged, QEMU_TIMEOUT)?;

    // The release firmware links a panic handler that cannot be linked, so
    // building it proves the kernels it uses are free of panic paths.
    for board in Board::ALL {
        let elf = firmware::build(board, true)?;
        eprintln!("\n== QEMU end-to-end on {}", board.name());
        let out = firmware::run_qemu(board, &elf, QEMU_TIMEOUT)?;
        e2e::check(board, &out)?;
        let sizes = size::measure(&elf)?;
        size::print(board, &sizes);
        if sizes.kernel_total() > size::KERNEL_BUDGET {
            return Err(format!(
                "{}: the kernels take {} B of .text, over the {} B budget",
                board.name(),
                sizes.kernel_total(),
                size::KERNEL_BUDGET
            ));
        }
    }
    // Instructions per element on the Cortex-M4F, deterministic under
    // -icount: the budgets are asserted, and the assembly kernels are
    // compared with their safe twins bit for bit.
    eprintln!("\n== instruction counts on {}", Board::Mps2An386.name());
    bench::report(&bench::measure()?)?;
    eprintln!("\nxtask test: all checks passed");
    Ok(())
}

fn demo(board: Board) -> Result {
    let elf = firmware::build(board, true)?;
    eprintln!("\n== running under qemu-system-arm ({})\n", board.name());
    let out = firmware::run_qemu(board, &elf, QEMU_TIMEOUT)?;
    firmware::print_report(board, &out);
    if out.exit_code != Some(0) {
        return Err(format!(
            "the firmware reported a failure (exit status {:?})",
            out.exit_code
        ));
    }
    if board == Board::Mps2An386 {
        // the same run with the EMA's shadow in emulated flash
        let paged = firmware::build_paged(board)?;
        eprintln!(
            "\n== the EMA's shadow in emulated flash, one RAM page ({})\n",
            board.name()
        );
        e2e::check_paged(&paged, QEMU_TIMEOUT)?;
    }
    Ok(())
}

/// Whether a command runs and succeeds.
fn works(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo` through the rustup proxy with an explicit toolchain.
fn cargo_on(toolchain: &str) -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{toolchain}"))
        .current_dir(root())
        .env_remove("RUSTUP_TOOLCHAIN");
    c
}

/// A short run of each fuzz target: `cargo fuzz` (libFuzzer) on a nightly
/// toolchain, installing what is missing where it can; otherwise the
/// stable mutation fuzzer over the same targets.
fn fuzz_smoke(secs: u64) -> Result {
    let mut nightly = works(cargo_on("nightly").arg("--version"));
    if !nightly {
        let mut c = Command::new("rustup");
        c.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
        nightly = run("rustup toolchain install nightly (for cargo fuzz)", c).is_ok();
    }
    let mut fuzz = nightly && works(cargo_on("nightly").args(["fuzz", "--version"]));
    if nightly && !fuzz {
        let mut c = cargo();
        c.args(["install", "cargo-fuzz", "--locked"]);
        fuzz = run("cargo install cargo-fuzz", c).is_ok();
    }
    for target in ["decode", "ops"] {
        if fuzz {
            // new inputs go to target/, the committed corpus stays as it is
            let out = root().join("target").join("fuzz-corpus").join(target);
            std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let mut c = cargo_on("nightly");
            c.args(["fuzz", "run", "--fuzz-dir", "host/fuzz", target])
                .arg(&out)
                .arg(root().join("host/fuzz/corpus").join(target))
                .args(["--", &format!("-max_total_time={secs}")]);
            run(&format!("cargo fuzz run {target} ({secs} s)"), c)?;
        } else {
            eprintln!(
                "\nno nightly toolchain or cargo-fuzz here: the stable mutation fuzzer runs the targets instead"
            );
            let mut c = cargo();
            c.args([
                "run",
                "--release",
                "-p",
                "polyak-host",
                "--example",
                "fuzz_stable",
                "--",
                target,
            ])
            .arg(secs.to_string());
            run(&format!("fuzz_stable {target} ({secs} s)"), c)?;
        }
    }
    Ok(())
}
