//! Any bytes given to the record header decoder (and its file-info
//! reader): an error or a header that re-encodes to the same block (a
//! sealed header's file-info area, ciphertext, aside); and
//! the bytes after the header block as the record's stored payload,
//! decompressed into exactly `payload_bytes` (capped here at 1 MiB), never
//! more: an error or a payload of exactly that length.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pbio::format::record::layout;
use pbio::format::{codec, Codec, RecordHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = RecordHeader::decode(data) {
        let sealed = header.transform.seal.run_id != 0;
        let mut out = [0u8; 4096];
        if sealed {
            // A sealed header's file-info area is ciphertext (`format::seal`
            // opens it): opaque here, so everything but the area and its
            // length must re-encode to the same bytes.
            header.encode_with_info(None, &mut out);
            let area = u32::from_le_bytes(data[layout::INFO_BYTES..][..4].try_into().unwrap());
            let mut expected = data[..4092].to_vec();
            expected[layout::INFO_BYTES..][..4].fill(0);
            expected[layout::INFO..][..area as usize].fill(0);
            assert_eq!(&out[..4092], &expected[..]);
        } else {
            let info = RecordHeader::decode_info(data);
            header.encode_with_info(info.as_ref(), &mut out);
            // The CRC (last 4 bytes) is not checked under the fuzzer.
            assert_eq!(&out[..4092], &data[..4092]);
        }
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
