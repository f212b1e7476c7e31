//! Replays the committed fuzz corpus through the fuzz targets (on stable,
//! in every test run), and keeps the corpus seeded with the current
//! encodings.

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("host/fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_cleanly() {
    for (target, run) in [
        ("decode", polyak_host::fuzz::decode as fn(&[u8])),
        ("ops", polyak_host::fuzz::ops),
    ] {
        let files = corpus(target);
        assert!(!files.is_empty(), "no corpus for {target}");
        for (name, data) in &files {
            run(data);
            let _ = name;
        }
        println!("{target}: {} corpus inputs replayed", files.len());
    }
}

#[test]
fn seeds_are_in_the_corpus() {
    // the seeds encode today's format: if the format changes, the corpus
    // must be regenerated (`POLYAK_WRITE_SEEDS=1 cargo test --test fuzz_corpus`)
    let write = std::env::var_os("POLYAK_WRITE_SEEDS").is_some();
    for (i, (target, data)) in polyak_host::fuzz::seeds().into_iter().enumerate() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("host/fuzz/corpus")
            .join(target)
            .join(format!("seed-{i}"));
        if write {
            std::fs::write(&path, &data).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert_eq!(on_disk, data, "{} is stale", path.display());
    }
}
