//! Any bytes given to the record header decoder (and its file-info
//! reader): an error or a header that re-encodes to the same block.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pbio::format::RecordHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = RecordHeader::decode(data) {
        let info = RecordHeader::decode_info(data);
        let mut out = [0u8; 4096];
        header.encode_with_info(info.as_ref(), &mut out);
        // The CRC (last 4 bytes) is not checked under the fuzzer.
        assert_eq!(&out[..4092], &data[..4092]);
        let _ = header.media_bytes();
    }
});
