//! Fuzz target: the safe unpickler alone on arbitrary bytes (zip and legacy persistent ids).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kestrel::weights::pytorch::fuzz_unpickle(data);
});
