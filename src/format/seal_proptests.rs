//! Property tests of `--encrypt` (format::seal): envelopes open with their
//! key only; sealed records round trip through their header block and
//! open back to the same bytes; any flipped bit of a sealed payload, of a
//! sealed file-info area, or of a framing field, fails to open; catalogs
//! round trip and any flipped bit fails.

use super::seal::*;
use super::*;
use proptest::prelude::*;

fn data_header() -> impl Strategy<Value = RecordHeader> {
    (
        any::<SetId>(),
        any::<u32>(),
        any::<u64>(),
        any::<(u32, u32)>(),
        1u32..=4096,
        any::<u64>(),
        0u64..1 << 40,
    )
        .prop_map(
            |(set_id, device_index, sequence, (file_id, segment_id), payload_bytes, extra, at)| {
                RecordHeader {
                    kind: RecordKind::Data,
                    set_id,
                    device_index,
                    sequence,
                    file_id,
                    segment_id,
                    file_offset: at,
                    payload_bytes,
                    file_size: at + payload_bytes as u64 + extra % (1 << 40),
                    payload_crc: 0,
                    transform: Transform::RAW,
                }
            },
        )
}

fn info() -> impl Strategy<Value = FileInfo> {
    (
        any::<(u32, u32, u32, u32)>(),
        any::<i64>(),
        any::<u64>(),
        prop::collection::vec(1u8..=255, 1..200),
    )
        .prop_map(
            |((mode, uid, gid, mtime_nsec), mtime_sec, data_bytes, path)| FileInfo {
                mode,
                uid,
                gid,
                mtime_sec,
                mtime_nsec,
                data_bytes,
                path,
                ..FileInfo::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn envelopes_open_with_their_key_only(
        data in any::<[u8; 32]>(),
        user in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
        set in any::<SetId>(),
        run in 1u64..,
        nonce in any::<[u8; 12]>(),
    ) {
        let key = DataKey::from_random(data);
        let user_key = UserKey::from_key_file(&user);
        let seal = key.wrap(&user_key, set, run, nonce);
        prop_assert_eq!(DataKey::unwrap(&seal, &user_key, set), Ok(key.clone()));
        if other != user {
            prop_assert_eq!(
                DataKey::unwrap(&seal, &UserKey::from_key_file(&other), set),
                Err(SealError::WrongKey)
            );
        }
        // In a label, it round trips.
        let label = Label {
            set_id: set,
            device_index: 0,
            device_count: 1,
            chunk_bytes: 1 << 20,
            block_bytes: 4096,
            created_unix_ns: 1,
            state: LabelState::Writing,
            catalog_offset: 0,
            catalog_bytes: 0,
            data_end: 0,
            catalog_digest: [0; 32],
            mac: [0; 32],
            seal,
        };
        let mut buf = vec![0u8; BLOCK_BYTES];
        label.encode_into(&mut buf);
        prop_assert_eq!(Label::decode(&buf), Ok(label));
    }

    #[test]
    fn sealed_records_round_trip_and_any_flip_fails(
        h in data_header(),
        file in info(),
        data in any::<[u8; 32]>(),
        run in 1u64..,
        payload_seed in any::<u64>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let key = DataKey::from_random(data).record_key(run, h.device_index);
        let mut payload: Vec<u8> = (0..h.payload_bytes as u64)
            .map(|i| (payload_seed.wrapping_mul(i + 1) >> 13) as u8)
            .collect();
        let plain = payload.clone();
        let mut block = vec![0u8; BLOCK_BYTES];
        h.encode_with_info(Some(&file), &mut block);
        let info_plain = RecordHeader::info_area_mut(&mut block).to_vec();
        let seal = key.seal(&h, RecordHeader::info_area_mut(&mut block), &mut payload);
        let sealed = RecordHeader {
            payload_crc: crc32c(&payload),
            transform: Transform { seal, ..h.transform },
            ..h
        };
        sealed.finish_in_place(&mut block);
        let decoded = RecordHeader::decode(&block);
        prop_assert_eq!(decoded, Ok(sealed));
        // Opened, the info and payload are what they were.
        let mut opened_block = block.clone();
        key.open_info(&sealed, RecordHeader::info_area_mut(&mut opened_block)).unwrap();
        prop_assert_eq!(RecordHeader::info_area_mut(&mut opened_block).to_vec(), info_plain);
        prop_assert_eq!(RecordHeader::decode_info(&opened_block).map(|i| i.path), Some(file.path.clone()));
        let mut opened = payload.clone();
        key.open_payload(&sealed, &mut opened).unwrap();
        prop_assert_eq!(&opened, &plain);
        // Any bit of the sealed payload flipped: refused.
        let bit = flip.index(payload.len() * 8);
        let mut bent = payload.clone();
        bent[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(key.open_payload(&sealed, &mut bent).is_err());
        // Any bit of the sealed info flipped: refused.
        let mut bent_block = block.clone();
        let area = RecordHeader::info_area_mut(&mut bent_block);
        let bit = flip.index(area.len() * 8);
        area[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(key.open_info(&sealed, area).is_err());
        // A framing field changed: refused.
        for forged in [
            RecordHeader { file_offset: sealed.file_offset ^ 4096, ..sealed },
            RecordHeader { sequence: sealed.sequence ^ 1, ..sealed },
            RecordHeader { file_id: sealed.file_id ^ 1, ..sealed },
        ] {
            let mut p = payload.clone();
            prop_assert!(key.open_payload(&forged, &mut p).is_err());
        }
    }

    #[test]
    fn sealed_catalogs_round_trip_and_any_flip_fails(
        data in any::<[u8; 32]>(),
        run in 1u64..,
        len in 1usize..200_000,
        flip in any::<prop::sample::Index>(),
    ) {
        let key = DataKey::from_random(data);
        let encoded: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let sealed = key.seal_catalog(run, &encoded);
        prop_assert_eq!(sealed.len() as u64, sealed_catalog_bytes(len as u64));
        prop_assert_eq!(key.open_catalog(run, &sealed), Ok(encoded));
        let bit = flip.index(sealed.len() * 8);
        let mut bent = sealed.clone();
        bent[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(key.open_catalog(run, &bent).is_err());
    }
}
