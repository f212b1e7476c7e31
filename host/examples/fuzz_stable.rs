//! A small mutation fuzzer on stable Rust, for machines without a nightly
//! toolchain: mutates the seed corpus of a target (bit flips, byte edits,
//! insertions, deletions, splices) for a number of seconds and runs the
//! target on each input. No coverage feedback — `cargo fuzz` is the real
//! fuzzer; this keeps the targets exercised where it cannot run.
//!
//! ```text
//! cargo run --release -p polyak-host --example fuzz_stable -- decode 20
//! ```

use std::panic;
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let target = args.first().map(String::as_str).unwrap_or("decode");
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let run: fn(&[u8]) = match target {
        "decode" => polyak_host::fuzz::decode,
        "ops" => polyak_host::fuzz::ops,
        other => {
            eprintln!("unknown target {other} (decode, ops)");
            std::process::exit(2);
        }
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if n == 0 {
            0
        } else {
            (state % n as u64) as usize
        }
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut execs = 0u64;
    panic::set_hook(Box::new(|_| {}));
    while Instant::now() < deadline {
        let mut input = corpus[rand(corpus.len())].clone();
        for _ in 0..1 + rand(8) {
            match rand(5) {
                0 if !input.is_empty() => {
                    let i = rand(input.len());
                    input[i] ^= 1 << rand(8);
                }
                1 if !input.is_empty() => {
                    let i = rand(input.len());
                    input[i] = rand(256) as u8;
                }
                2 => {
                    let i = rand(input.len() + 1);
                    input.insert(i, rand(256) as u8);
                }
                3 if !input.is_empty() => {
                    input.remove(rand(input.len()));
                }
                _ => {
                    let other = &corpus[rand(corpus.len())];
                    let cut = rand(input.len() + 1).min(input.len());
                    input.truncate(cut);
                    input.extend_from_slice(&other[rand(other.len() + 1).min(other.len())..]);
                }
            }
        }
        execs += 1;
        if panic::catch_unwind(|| run(&input)).is_err() {
            let path = std::env::temp_dir().join(format!("polyak-fuzz-{target}-crash"));
            let _ = std::fs::write(&path, &input);
            let _ = panic::take_hook();
            run(&input); // panic again, visibly
            eprintln!("crash input saved to {}", path.display());
            std::process::exit(1);
        }
        if execs.is_multiple_of(64) && corpus.len() < 256 {
            corpus.push(input);
        }
    }
    println!("fuzz_stable {target}: {execs} executions in {secs} s, no failure");
}
