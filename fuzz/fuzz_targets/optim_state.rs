#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrograd_fuzz::optim_state(data));
