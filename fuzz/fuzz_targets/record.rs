//! Any bytes given to the record header decoder (and its file-info
//! reader): an error or a header that re-encodes to the same block; and
//! the bytes after the header block as the record's stored payload,
//! decompressed into exactly `payload_bytes` (capped here at 1 MiB), never
//! more: an error or a payload of exactly that length.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pbio::format::{codec, Codec, RecordHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = RecordHeader::decode(data) {
        let info = RecordHeader::decode_info(data);
        let mut out = [0u8; 4096];
        header.encode_with_info(info.as_ref(), &mut out);
        // The CRC (last 4 bytes) is not checked under the fuzzer.
        assert_eq!(&out[..4092], &data[..4092]);
        let _ = header.media_bytes();
        let stored = &data[4096..];
        if header.transform.codec != Codec::Raw
            && stored.len() >= header.stored_len() as usize
            && header.payload_bytes <= 1 << 20
        {
            let mut payload = vec![0u8; header.payload_bytes as usize];
            let stored = &stored[..header.stored_len() as usize];
            let _ = codec::decompress(header.transform.codec, stored, &mut payload);
        }
    }
    // The decoders alone, over any bytes, into a small buffer.
    if let Some((&which, rest)) = data.split_first() {
        let codec = if which & 1 == 0 { Codec::Zstd } else { Codec::Lz4 };
        let mut payload = vec![0u8; (which as usize) * 64];
        if codec::decompress(codec, rest, &mut payload).is_ok() {
            assert_eq!(payload.len(), (which as usize) * 64);
        }
    }
});
