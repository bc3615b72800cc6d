//! Fuzz target: the zip central-directory reader alone, then (if the bytes look like a zip) the
//! whole PyTorch zip path: data.pkl, storages, every tensor's bytes and f32 conversion.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kestrel::weights::pytorch::fuzz_zip_index(data);
    if data.starts_with(b"PK\x03\x04") {
        kestrel_fuzz::open_and_read_all(data);
    }
});
