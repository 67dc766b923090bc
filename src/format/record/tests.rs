use super::*;
use crate::format::{crc32c, BLOCK_BYTES};

fn data() -> RecordHeader {
    RecordHeader {
        kind: RecordKind::Data,
        set_id: SetId([0x5A; 16]),
        device_index: 2,
        sequence: 77,
        file_id: 12,
        segment_id: 34,
        file_offset: 3 << 20,
        payload_bytes: 1 << 20,
        file_size: 10 << 20,
        payload_crc: 0xDEAD_BEEF,
        transform: crate::format::Transform::RAW,
    }
}

fn catalog() -> RecordHeader {
    RecordHeader {
        kind: RecordKind::Catalog,
        file_id: 0,
        segment_id: 0,
        file_offset: 1 << 20,
        payload_bytes: 1000,
        file_size: (1 << 20) + 1000,
        ..data()
    }
}

fn end() -> RecordHeader {
    RecordHeader {
        kind: RecordKind::End,
        file_id: 0,
        segment_id: 0,
        file_offset: 0,
        payload_bytes: 0,
        file_size: 0,
        payload_crc: 0,
        ..data()
    }
}

fn encode(h: &RecordHeader) -> Vec<u8> {
    let mut buf = vec![0xEE; BLOCK_BYTES];
    h.encode_into(&mut buf);
    buf
}

/// Encode bypassing `validate`: write the fields, then fix the CRC.
fn encode_raw(h: &RecordHeader) -> Vec<u8> {
    let mut buf = encode(&data());
    let b: &mut Block = buf.first_chunk_mut().unwrap();
    put_u32::<{ layout::KIND }>(b, h.kind.code());
    put_u32::<{ layout::PAYLOAD_BYTES }>(b, h.payload_bytes);
    put_u32::<{ layout::FILE_ID }>(b, h.file_id);
    put_u32::<{ layout::SEGMENT_ID }>(b, h.segment_id);
    put_u64::<{ layout::FILE_OFFSET }>(b, h.file_offset);
    put_u64::<{ layout::FILE_SIZE }>(b, h.file_size);
    put_u32::<{ layout::PAYLOAD_CRC }>(b, h.payload_crc);
    block::seal(b);
    buf
}

#[test]
fn round_trips() {
    for h in [data(), catalog(), end()] {
        let buf = encode(&h);
        assert_eq!(RecordHeader::decode(&buf), Ok(h));
        let mut long = buf;
        long.extend_from_slice(&[0xFF; 4096]);
        assert_eq!(RecordHeader::decode(&long), Ok(h));
    }
}

#[test]
fn layout_is_pinned() {
    let buf = encode(&data());
    assert_eq!(&buf[0..8], b"PBIORECD");
    assert_eq!(buf[8..12], 1u32.to_le_bytes());
    assert_eq!(buf[12..16], 1u32.to_le_bytes());
    assert_eq!(buf[16..32], [0x5A; 16]);
    assert_eq!(buf[32..36], 2u32.to_le_bytes());
    assert_eq!(buf[36..40], (1u32 << 20).to_le_bytes());
    assert_eq!(buf[40..48], 77u64.to_le_bytes());
    assert_eq!(buf[48..52], 12u32.to_le_bytes());
    assert_eq!(buf[52..56], 34u32.to_le_bytes());
    assert_eq!(buf[56..64], (3u64 << 20).to_le_bytes());
    assert_eq!(buf[64..72], (10u64 << 20).to_le_bytes());
    assert_eq!(buf[72..76], 0xDEAD_BEEFu32.to_le_bytes());
    assert!(buf[76..4092].iter().all(|&b| b == 0));
    assert_eq!(buf[4092..], crc32c(&buf[..4092]).to_le_bytes());
    assert_eq!(encode(&catalog())[12..16], 2u32.to_le_bytes());
    assert_eq!(encode(&end())[12..16], 3u32.to_le_bytes());
}

#[test]
fn media_bytes() {
    assert_eq!(end().media_bytes(), 4096);
    assert_eq!(catalog().media_bytes(), 8192);
    assert_eq!(data().media_bytes(), 4096 + (1 << 20));
    assert_eq!(
        RecordHeader {
            payload_bytes: 4097,
            ..data()
        }
        .media_bytes(),
        3 * 4096
    );
}

#[test]
fn short_buffer() {
    let buf = encode(&end());
    for len in [0, 7, 76, 4095] {
        assert_eq!(
            RecordHeader::decode(&buf[..len]),
            Err(FormatError::Short {
                have: len,
                need: BLOCK_BYTES
            })
        );
    }
}

#[test]
#[should_panic(expected = "need 4096")]
fn encode_into_short_buffer_panics() {
    data().encode_into(&mut [0u8; 100]);
}

#[test]
#[should_panic(expected = "invalid header")]
fn encode_of_invalid_header_panics() {
    RecordHeader {
        payload_bytes: 1,
        ..end()
    }
    .encode_into(&mut [0u8; BLOCK_BYTES]);
}

#[test]
fn every_flipped_bit_is_detected() {
    for h in [data(), end()] {
        let good = encode(&h);
        for bit in 0..BLOCK_BYTES * 8 {
            let mut buf = good.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            let got = RecordHeader::decode(&buf);
            if bit / 8 < 8 {
                assert_eq!(
                    got,
                    Err(FormatError::BadMagic {
                        what: "record header"
                    })
                );
            } else {
                assert!(
                    matches!(
                        got,
                        Err(FormatError::Checksum {
                            what: "record header",
                            ..
                        })
                    ),
                    "bit {bit}: {got:?}"
                );
            }
        }
    }
}

#[test]
fn frame_errors() {
    let good = encode(&data());
    let mut buf = good.clone();
    buf[..8].copy_from_slice(b"PBIOLABL");
    assert_eq!(
        RecordHeader::decode(&buf),
        Err(FormatError::BadMagic {
            what: "record header"
        })
    );

    let mut buf = good.clone();
    let b: &mut Block = buf.first_chunk_mut().unwrap();
    put_u32::<{ layout::VERSION }>(b, 0);
    block::seal(b);
    assert_eq!(RecordHeader::decode(&buf), Err(FormatError::Version(0)));

    // The seal area of a header in clear (cipher 0) is reserved too.
    for offset in [
        layout::RESERVED,
        2048,
        layout::SEAL - 1,
        layout::SEAL + 1,
        layout::SEAL_CIPHER - 1,
    ] {
        let mut buf = good.clone();
        buf[offset] = 0x80;
        block::seal(buf.first_chunk_mut().unwrap());
        assert_eq!(
            RecordHeader::decode(&buf),
            Err(FormatError::Reserved {
                what: "record header",
                offset
            })
        );
    }

    for kind in [0u32, 4, u32::MAX] {
        let mut buf = good.clone();
        let b: &mut Block = buf.first_chunk_mut().unwrap();
        put_u32::<{ layout::KIND }>(b, kind);
        block::seal(b);
        assert_eq!(
            RecordHeader::decode(&buf),
            Err(FormatError::Field {
                field: "record.kind",
                value: kind.into()
            })
        );
    }
}

#[test]
fn field_rules() {
    let (d, c, e) = (data(), catalog(), end());
    let max = PAYLOAD_BYTES_MAX;
    let cases: Vec<(RecordHeader, &str, u64)> = vec![
        (
            RecordHeader {
                payload_bytes: max + 1,
                file_size: u64::MAX,
                ..d
            },
            "record.payload_bytes",
            u64::from(max) + 1,
        ),
        (
            RecordHeader { file_id: 1, ..c },
            "catalog_record.file_id",
            1,
        ),
        (
            RecordHeader { segment_id: 9, ..c },
            "catalog_record.segment_id",
            9,
        ),
        (
            RecordHeader {
                payload_bytes: 0,
                payload_crc: 0,
                ..c
            },
            "catalog_record.payload_bytes",
            0,
        ),
        (
            RecordHeader {
                payload_bytes: 4096,
                ..e
            },
            "end_record.payload_bytes",
            4096,
        ),
        (RecordHeader { file_id: 1, ..e }, "end_record.file_id", 1),
        (
            RecordHeader { segment_id: 1, ..e },
            "end_record.segment_id",
            1,
        ),
        (
            RecordHeader {
                file_offset: 1,
                ..e
            },
            "end_record.file_offset",
            1,
        ),
        (
            RecordHeader { file_size: 1, ..e },
            "end_record.file_size",
            1,
        ),
        (
            RecordHeader {
                payload_crc: 7,
                ..e
            },
            "record.payload_crc",
            7,
        ),
        (
            RecordHeader {
                payload_bytes: 0,
                payload_crc: 7,
                ..d
            },
            "record.payload_crc",
            7,
        ),
        (
            RecordHeader {
                file_size: (4 << 20) - 1,
                ..d
            },
            "record.file_offset",
            3 << 20,
        ),
        (
            RecordHeader {
                file_offset: u64::MAX,
                file_size: u64::MAX,
                ..d
            },
            "record.file_offset",
            u64::MAX,
        ),
        (
            RecordHeader {
                file_size: 1 << 20,
                ..c
            },
            "record.file_offset",
            1 << 20,
        ),
    ];
    for (h, field, value) in cases {
        assert_eq!(
            h.validate(),
            Err(FormatError::Field { field, value }),
            "{h:?}"
        );
        assert_eq!(
            RecordHeader::decode(&encode_raw(&h)),
            Err(FormatError::Field { field, value }),
            "{h:?}"
        );
    }
    let ok = [
        RecordHeader {
            payload_bytes: max,
            file_offset: 0,
            file_size: max.into(),
            ..d
        },
        RecordHeader {
            file_size: 4 << 20,
            ..d
        },
        RecordHeader {
            payload_bytes: 0,
            payload_crc: 0,
            file_offset: 0,
            file_size: 0,
            ..d
        },
        RecordHeader {
            file_offset: u64::MAX - 1000,
            file_size: u64::MAX,
            ..c
        },
    ];
    for h in ok {
        assert_eq!(RecordHeader::decode(&encode(&h)), Ok(h));
    }
}

#[test]
fn file_info_round_trip_truncation_and_rules() {
    let info = FileInfo {
        mode: 0o100644,
        uid: 1234,
        gid: 99,
        mtime_sec: -5,
        mtime_nsec: 999_999_999,
        data_bytes: 1 << 40,
        path: b"dir/caf\xe9".to_vec(),
        path_truncated: false,
        xattrs: None,
        xattrs_cut: false,
    };
    let mut buf = [0u8; BLOCK_BYTES];
    data().encode_with_info(Some(&info), &mut buf);
    assert_eq!(RecordHeader::decode(&buf), Ok(data()));
    assert_eq!(RecordHeader::decode_info(&buf), Some(info.clone()));
    // Without info: none.
    data().encode_into(&mut buf);
    assert_eq!(RecordHeader::decode_info(&buf), None);
    // A path longer than the area is cut and flagged.
    let long = FileInfo {
        path: vec![b'x'; layout::PATH_BYTES_MAX + 10],
        ..info.clone()
    };
    data().encode_with_info(Some(&long), &mut buf);
    let got = RecordHeader::decode_info(&buf).unwrap();
    assert_eq!(got.path.len(), layout::PATH_BYTES_MAX);
    assert!(got.path_truncated);
    assert_eq!(RecordHeader::decode(&buf), Ok(data()));
    // A byte after the info area is reserved.
    data().encode_with_info(Some(&info), &mut buf);
    let after = layout::INFO + layout::INFO_PATH + info.path.len();
    buf[after] = 1;
    block::seal(buf.first_chunk_mut().unwrap());
    assert_eq!(
        RecordHeader::decode(&buf),
        Err(FormatError::Reserved {
            what: "record header",
            offset: after
        })
    );
    // An info length that disagrees with the path length is rejected.
    data().encode_with_info(Some(&info), &mut buf);
    put_u32::<{ layout::INFO_BYTES }>(buf.first_chunk_mut().unwrap(), 4000);
    block::seal(buf.first_chunk_mut().unwrap());
    assert!(matches!(
        RecordHeader::decode(&buf),
        Err(FormatError::Field {
            field: "record.info_bytes",
            ..
        })
    ));
}

fn x(name: &str, value: &[u8]) -> Xattr {
    Xattr {
        name: name.as_bytes().to_vec(),
        value: value.to_vec(),
    }
}

#[test]
fn file_info_xattrs_round_trip_cut_and_rules() {
    let info = FileInfo {
        mode: 0o100755,
        data_bytes: 10,
        path: b"d/ping".to_vec(),
        xattrs: Some(vec![
            x("security.capability", &[1, 0, 0, 2, 0x20, 0, 0, 0]),
            x("user.a", b""),
        ]),
        ..FileInfo::default()
    };
    let mut buf = [0u8; BLOCK_BYTES];
    data().encode_with_info(Some(&info), &mut buf);
    assert_eq!(RecordHeader::decode(&buf), Ok(data()));
    assert_eq!(RecordHeader::decode_info(&buf), Some(info.clone()));
    // Pinned: flags 2, then after the path: count 2, entry 1.
    let a = layout::INFO;
    assert_eq!(
        buf[a + layout::INFO_FLAGS..a + layout::INFO_FLAGS + 2],
        [2, 0]
    );
    let area = a + layout::INFO_PATH + 6;
    assert_eq!(buf[area..area + 5], [2, 0, 19, 8, 0]);
    assert_eq!(&buf[area + 5..area + 24], b"security.capability");
    // The first record of a file without xattrs says so: an empty list.
    let none = FileInfo {
        xattrs: Some(Vec::new()),
        ..info.clone()
    };
    data().encode_with_info(Some(&none), &mut buf);
    assert_eq!(RecordHeader::decode_info(&buf), Some(none));
    // Too big to fit: left out and flagged; the others are kept.
    let big = FileInfo {
        xattrs: Some(vec![
            x("system.posix_acl_access", &[7; 5000]),
            x("user.small", b"s"),
        ]),
        ..info.clone()
    };
    data().encode_with_info(Some(&big), &mut buf);
    let got = RecordHeader::decode_info(&buf).unwrap();
    assert_eq!(got.xattrs, Some(vec![x("user.small", b"s")]));
    assert!(got.xattrs_cut);
    assert_eq!(RecordHeader::decode(&buf), Ok(data()));
    // A path that fills the area leaves no room even for the count.
    let long = FileInfo {
        path: vec![b'p'; layout::PATH_BYTES_MAX],
        ..info.clone()
    };
    data().encode_with_info(Some(&long), &mut buf);
    let got = RecordHeader::decode_info(&buf).unwrap();
    assert_eq!((got.xattrs, got.xattrs_cut), (None, true));
    // Unsorted names, a NUL in a name, trailing bytes, an unknown flag:
    // all rejected.
    type Edit = fn(&mut [u8; BLOCK_BYTES], usize);
    let edits: [Edit; 4] = [
        |b, area| b[area + 5] = b'z', // "zecurity.capability" > "user.a"
        |b, area| b[area + 6] = 0,
        |b, _| {
            let n = get_u32::<{ layout::INFO_BYTES }>(b) + 1;
            put_u32::<{ layout::INFO_BYTES }>(b, n);
        },
        |b, _| b[layout::INFO + layout::INFO_FLAGS] = 8,
    ];
    for (i, edit) in edits.iter().enumerate() {
        data().encode_with_info(Some(&info), &mut buf);
        edit(&mut buf, area);
        block::seal(buf.first_chunk_mut().unwrap());
        assert!(
            matches!(
                RecordHeader::decode(&buf),
                Err(FormatError::Field {
                    field: "record.info_bytes",
                    ..
                })
            ),
            "edit {i}"
        );
    }
}

fn compressed(codec: Codec, stored_bytes: u32) -> RecordHeader {
    RecordHeader {
        transform: Transform {
            codec,
            stored_bytes,
            ..Transform::RAW
        },
        ..data()
    }
}

#[test]
fn compressed_records_round_trip_and_take_their_stored_length() {
    for codec in [Codec::Zstd, Codec::Lz4] {
        let h = compressed(codec, 5000);
        let buf = encode(&h);
        assert_eq!(buf[4084..4088], codec.code().to_le_bytes());
        assert_eq!(buf[4088..4092], 5000u32.to_le_bytes());
        assert_eq!(RecordHeader::decode(&buf), Ok(h));
        assert_eq!(h.stored_len(), 5000);
        assert_eq!(h.media_bytes(), 4096 + 8192);
    }
    // Raw: the two fields are zero and the payload is stored whole.
    let buf = encode(&data());
    assert_eq!(buf[4084..4092], [0; 8]);
    assert_eq!(data().stored_len(), 1 << 20);
}

/// The codec fields set on an encoded block, the CRC fixed.
fn with_codec(h: &RecordHeader, code: u32, stored: u32) -> Vec<u8> {
    let mut buf = encode(h);
    let b: &mut Block = buf.first_chunk_mut().unwrap();
    put_u32::<{ layout::CODEC }>(b, code);
    put_u32::<{ layout::STORED_BYTES }>(b, stored);
    block::seal(b);
    buf
}

#[test]
fn codec_rules_reject_hostile_values() {
    let field = |f: &'static str, value: u64| Err(FormatError::Field { field: f, value });
    // Unknown codec.
    assert_eq!(
        RecordHeader::decode(&with_codec(&data(), 3, 10)),
        field("record.codec", 3)
    );
    // Raw with a stored length.
    assert_eq!(
        RecordHeader::decode(&with_codec(&data(), 0, 10)),
        field("record.stored_bytes", 10)
    );
    // Compressed with no stored bytes, or not shorter than the payload
    // (it would be stored raw; a longer one could run past the record).
    assert_eq!(
        RecordHeader::decode(&with_codec(&data(), 1, 0)),
        field("record.stored_bytes", 0)
    );
    for stored in [1 << 20, (1 << 20) + 1, u32::MAX] {
        assert_eq!(
            RecordHeader::decode(&with_codec(&data(), 2, stored)),
            field("record.stored_bytes", stored.into())
        );
    }
    // Only data records are compressed.
    assert_eq!(
        RecordHeader::decode(&with_codec(&catalog(), 1, 10)),
        field("record.codec", 1)
    );
    assert_eq!(
        RecordHeader::decode(&with_codec(&end(), 2, 0)),
        field("record.codec", 2)
    );
    // The info area may not reach the codec fields.
    let mut buf = encode(&data());
    let b: &mut Block = buf.first_chunk_mut().unwrap();
    put_u32::<{ layout::INFO_BYTES }>(b, (layout::CODEC - layout::INFO + 4) as u32);
    block::seal(b);
    assert!(RecordHeader::decode(&buf).is_err());
}

#[test]
fn seal_area_rules_reject_hostile_values() {
    let sealed = RecordHeader {
        transform: Transform {
            seal: crate::format::seal::RecordSeal {
                run_id: 9,
                info_tag: [1; 16],
                payload_tag: [2; 16],
            },
            ..Transform::RAW
        },
        ..data()
    };
    let good = encode(&sealed);
    assert_eq!(good[layout::SEAL_CIPHER..][..4], 1u32.to_le_bytes());
    assert_eq!(RecordHeader::decode(&good), Ok(sealed));
    let cipher_err = |buf: &[u8]| {
        matches!(
            RecordHeader::decode(buf),
            Err(FormatError::Field {
                field: "record.cipher",
                ..
            })
        )
    };
    // An unknown cipher, a run id of 0, a sealed non-data record.
    let mut buf = good.clone();
    buf[layout::SEAL_CIPHER] = 2;
    block::seal(buf.first_chunk_mut().unwrap());
    assert!(cipher_err(&buf));
    let mut buf = good.clone();
    buf[layout::SEAL_RUN_ID] = 0;
    block::seal(buf.first_chunk_mut().unwrap());
    assert!(cipher_err(&buf));
    let mut buf = good.clone();
    put_u32::<{ layout::KIND }>(buf.first_chunk_mut().unwrap(), 2);
    put_u32::<{ layout::FILE_ID }>(buf.first_chunk_mut().unwrap(), 0);
    put_u32::<{ layout::SEGMENT_ID }>(buf.first_chunk_mut().unwrap(), 0);
    block::seal(buf.first_chunk_mut().unwrap());
    assert!(cipher_err(&buf));
    // A sealed header must not carry a seal on a catalog record either.
    let catalog = RecordHeader {
        kind: RecordKind::Catalog,
        file_id: 0,
        segment_id: 0,
        ..sealed
    };
    assert!(catalog.validate().is_err());
}
