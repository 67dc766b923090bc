//! Any bytes given to the parity record header decoder (`--parity`,
//! docs/FORMAT.md "Parity records"): an error, or a header that passes
//! its own rules and re-encodes to the same block.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pbio::format::parity::ParityHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = ParityHeader::decode(data) {
        assert!(header.validate().is_ok());
        let mut out = [0u8; 4096];
        header.encode_into(&mut out);
        // The CRC (last 4 bytes) is not checked under the fuzzer.
        assert_eq!(&out[..4092], &data[..4092]);
        assert_eq!(header.k() + header.m(), header.members.len());
    }
});
