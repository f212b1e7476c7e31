//! `cargo xtask …`: the one place that knows how to drive the checks, the
//! cross builds and (for the firmware) QEMU.
//!
//! ```text
//! cargo xtask test    fmt, clippy, tests, docs, no_std cross builds
//! ```

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

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
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  test    fmt, clippy, tests, docs, no_std cross builds"
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

fn root() -> PathBuf {
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

fn run(what: &str, mut cmd: Command) -> Result {
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
fn ensure_targets(targets: &[&str]) -> Result {
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
    let mut c = cargo();
    c.args([
        "fmt",
        "--check",
        "--manifest-path",
        "firmware-example/Cargo.toml",
    ]);
    run("cargo fmt --check (firmware-example)", c)?;

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

    for target in THUMB_TARGETS {
        for features in [&["--no-default-features"][..], &["--features", "defmt"][..]] {
            let mut c = cargo();
            c.args(["build", "--release", "-p", "polyak", "--target", target])
                .args(features);
            run(&format!("polyak for {target} {}", features.join(" ")), c)?;
        }
    }
    eprintln!("\nxtask test: all checks passed");
    Ok(())
}
