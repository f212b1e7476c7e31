//! libFuzzer entry for `polyak_host::fuzz::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| polyak_host::fuzz::decode(data));
