//! Any bytes given to the catalog decoder: an error or a catalog whose
//! encoding is exactly the input (one encoding per catalog).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pbio::format::Catalog;

fuzz_target!(|data: &[u8]| {
    if let Ok(catalog) = Catalog::decode(data) {
        // The trailing CRC is not checked under the fuzzer.
        let encoded = catalog.encode();
        assert_eq!(&encoded[..encoded.len() - 4], &data[..data.len() - 4]);
        // Its MAC can be checked (keyed BLAKE3 of the bytes before it).
        let _ = catalog.mac_for(&[0x4B; 32]) == catalog.mac;
    }
});
