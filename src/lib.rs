//! The non-published suite package: it owns the integration and property
//! tests in `tests/` and the benchmarks in `benches/`. Its documentation is
//! the project README, so the README's examples run as doctests.
#![doc = include_str!("../README.md")]
