//! Fuzz target: a whole safetensors file from memory, then every tensor's bytes and f32 conversion.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kestrel_fuzz::open_and_read_all(data);
});
