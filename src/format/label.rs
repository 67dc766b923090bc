//! The label: block 0 of every random-access device (first tape block on tape).

use super::block::{self, get, get_u32, get_u64, put, put_u32, put_u64, Block};
use super::seal::{LabelSeal, NONCE_BYTES, WRAPPED_BYTES};
use super::{
    catalog::CATALOG_BYTES_MIN, chunk_bytes_valid, is_block_aligned, FormatError, MacKey, SetId,
    BLOCK_BYTES, DEVICE_BLOCK_BYTES_MAX, DEVICE_BLOCK_BYTES_MIN, HASH_BYTES, LABEL_MAGIC,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelState {
    /// Data is being written; the catalog position is not valid yet.
    Writing,
    /// Data and catalog are durable; `catalog_offset`/`catalog_bytes` are valid.
    Complete,
}

impl LabelState {
    /// The value stored on media.
    pub const fn code(self) -> u32 {
        match self {
            LabelState::Writing => 1,
            LabelState::Complete => 2,
        }
    }

    /// The state stored on media as `code`, if known.
    pub const fn from_code(code: u32) -> Option<LabelState> {
        match code {
            1 => Some(LabelState::Writing),
            2 => Some(LabelState::Complete),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    pub set_id: SetId,
    pub device_index: u32,
    pub device_count: u32,
    pub chunk_bytes: u32,
    /// Device logical block size at backup time.
    pub block_bytes: u32,
    pub created_unix_ns: u64,
    pub state: LabelState,
    /// Media offset of the first catalog record (Complete only).
    pub catalog_offset: u64,
    /// Length of the encoded catalog in bytes (Complete only).
    pub catalog_bytes: u64,
    /// Media offset just past the last data record (Complete only).
    pub data_end: u64,
    /// BLAKE3 of the encoded catalog (Complete only; zero while Writing,
    /// and always zero on a tape, whose label is never rewritten).
    pub catalog_digest: [u8; HASH_BYTES],
    /// Keyed BLAKE3 of the label's bytes `[0, layout::MAC)` with the set's
    /// MAC key (`Label::mac_for`); zero for a set written without a key.
    pub mac: [u8; HASH_BYTES],
    /// `--encrypt`: the envelope (cipher, KDF, run id, wrapped data key);
    /// `LabelSeal::NONE` for a set not encrypted.
    pub seal: LabelSeal,
}

/// Byte offsets of the label's fields in its block (docs/FORMAT.md, "Label").
pub mod layout {
    use super::block;
    pub const MAGIC: usize = block::MAGIC; // [u8; 8] "PBIOLABL"
    pub const VERSION: usize = block::VERSION; // u32
    pub const STATE: usize = 12; // u32: 1 writing, 2 complete
    pub const SET_ID: usize = 16; // [u8; 16]
    pub const DEVICE_INDEX: usize = 32; // u32
    pub const DEVICE_COUNT: usize = 36; // u32
    pub const CHUNK_BYTES: usize = 40; // u32
    pub const BLOCK_BYTES: usize = 44; // u32
    pub const CREATED_UNIX_NS: usize = 48; // u64
    pub const CATALOG_OFFSET: usize = 56; // u64
    pub const CATALOG_BYTES: usize = 64; // u64
    pub const DATA_END: usize = 72; // u64
    pub const CATALOG_DIGEST: usize = 80; // [u8; 32]
    /// The MAC covers the bytes before it, `[0, MAC)`.
    pub const MAC: usize = 112; // [u8; 32]
    /// The envelope of `--encrypt` (zero without it).
    pub const CIPHER: usize = 144; // u32: 0 none, 1 AES-256-GCM
    pub const KDF: usize = 148; // u32: 1 key file
    pub const KDF_PARAMS: usize = 152; // 3 x u32
    pub const KDF_SALT: usize = 164; // [u8; 16]
    pub const WRAP_NONCE: usize = 180; // [u8; 12]
    pub const RUN_ID: usize = 192; // u64
    pub const WRAPPED_KEY: usize = 200; // [u8; 48]: sealed data key, tag
    /// First reserved byte; `[RESERVED, CRC)` is zero.
    pub const RESERVED: usize = 248;
    pub const CRC: usize = block::CRC; // u32, CRC32C of [0, CRC)

    // Fields are contiguous, in this order, and end before the CRC.
    const _: () = assert!(STATE == VERSION + 4);
    const _: () = assert!(SET_ID == STATE + 4);
    const _: () = assert!(DEVICE_INDEX == SET_ID + 16);
    const _: () = assert!(DEVICE_COUNT == DEVICE_INDEX + 4);
    const _: () = assert!(CHUNK_BYTES == DEVICE_COUNT + 4);
    const _: () = assert!(BLOCK_BYTES == CHUNK_BYTES + 4);
    const _: () = assert!(CREATED_UNIX_NS == BLOCK_BYTES + 4);
    const _: () = assert!(CATALOG_OFFSET == CREATED_UNIX_NS + 8);
    const _: () = assert!(CATALOG_BYTES == CATALOG_OFFSET + 8);
    const _: () = assert!(DATA_END == CATALOG_BYTES + 8);
    const _: () = assert!(CATALOG_DIGEST == DATA_END + 8);
    const _: () = assert!(MAC == CATALOG_DIGEST + 32);
    const _: () = assert!(CIPHER == MAC + 32 && KDF == CIPHER + 4 && KDF_PARAMS == KDF + 4);
    const _: () = assert!(KDF_SALT == KDF_PARAMS + 12 && WRAP_NONCE == KDF_SALT + 16);
    const _: () = assert!(RUN_ID == WRAP_NONCE + 12 && WRAPPED_KEY == RUN_ID + 8);
    const _: () = assert!(RESERVED == WRAPPED_KEY + 48);
    const _: () = assert!(RESERVED <= CRC);
    // Every u64 field is naturally aligned.
    const _: () = assert!(CREATED_UNIX_NS.is_multiple_of(8) && CATALOG_OFFSET.is_multiple_of(8));
    const _: () = assert!(CATALOG_BYTES.is_multiple_of(8) && DATA_END.is_multiple_of(8));
}

impl Label {
    /// Encode into the first 4096 bytes of `out` (panics if `out` is shorter: caller bug).
    /// Also panics if the label is invalid (`validate`), so that nothing a
    /// reader would reject is ever written.
    pub fn encode_into(&self, out: &mut [u8]) {
        if let Err(e) = self.validate() {
            panic!("Label::encode_into of an invalid label (caller bug): {e}");
        }
        let b: &mut Block = block::start(out, &LABEL_MAGIC, "label");
        put_u32::<{ layout::STATE }>(b, self.state.code());
        put::<{ layout::SET_ID }, { SetId::BYTES }>(b, self.set_id.0);
        put_u32::<{ layout::DEVICE_INDEX }>(b, self.device_index);
        put_u32::<{ layout::DEVICE_COUNT }>(b, self.device_count);
        put_u32::<{ layout::CHUNK_BYTES }>(b, self.chunk_bytes);
        put_u32::<{ layout::BLOCK_BYTES }>(b, self.block_bytes);
        put_u64::<{ layout::CREATED_UNIX_NS }>(b, self.created_unix_ns);
        put_u64::<{ layout::CATALOG_OFFSET }>(b, self.catalog_offset);
        put_u64::<{ layout::CATALOG_BYTES }>(b, self.catalog_bytes);
        put_u64::<{ layout::DATA_END }>(b, self.data_end);
        put::<{ layout::CATALOG_DIGEST }, HASH_BYTES>(b, self.catalog_digest);
        put::<{ layout::MAC }, HASH_BYTES>(b, self.mac);
        let e = &self.seal;
        put_u32::<{ layout::CIPHER }>(b, e.cipher);
        put_u32::<{ layout::KDF }>(b, e.kdf);
        for (i, p) in e.kdf_params.iter().enumerate() {
            b[layout::KDF_PARAMS + 4 * i..][..4].copy_from_slice(&p.to_le_bytes());
        }
        put::<{ layout::KDF_SALT }, 16>(b, e.kdf_salt);
        put::<{ layout::WRAP_NONCE }, NONCE_BYTES>(b, e.wrap_nonce);
        put_u64::<{ layout::RUN_ID }>(b, e.run_id);
        put::<{ layout::WRAPPED_KEY }, WRAPPED_BYTES>(b, e.wrapped);
        block::seal(b);
    }

    /// The label's MAC with `key`: keyed BLAKE3 over its encoded bytes
    /// `[0, layout::MAC)` (every field but the MAC and the CRC). Panics on
    /// an invalid label, as `encode_into` does.
    pub fn mac_for(&self, key: &MacKey) -> [u8; HASH_BYTES] {
        let mut buf = [0u8; BLOCK_BYTES];
        self.encode_into(&mut buf);
        super::mac(key, &buf[..layout::MAC])
    }

    /// The label of device `device_index` of `device_count` (block size
    /// `block_bytes`) of the set `set_id` as a writer starts it: Writing,
    /// no catalog yet, MAC zero until `sealed`.
    pub fn new_writing(
        set_id: SetId,
        created_unix_ns: u64,
        chunk_bytes: u32,
        seal: LabelSeal,
        device_index: u32,
        device_count: u32,
        block_bytes: u32,
    ) -> Label {
        Label {
            set_id,
            device_index,
            device_count,
            chunk_bytes,
            block_bytes,
            created_unix_ns,
            state: LabelState::Writing,
            catalog_offset: 0,
            catalog_bytes: 0,
            data_end: 0,
            catalog_digest: [0; HASH_BYTES],
            mac: [0; HASH_BYTES],
            seal,
        }
    }

    /// This set's label for device `device_index` (block size
    /// `block_bytes`) as a writer starts it (`new_writing`).
    pub fn writing(self, device_index: u32, block_bytes: u32) -> Label {
        Label::new_writing(
            self.set_id,
            self.created_unix_ns,
            self.chunk_bytes,
            self.seal,
            device_index,
            self.device_count,
            block_bytes,
        )
    }

    /// The label with its `mac` set for `key`, or zero without one.
    pub fn sealed(self, key: Option<&MacKey>) -> Label {
        Label {
            mac: key.map_or([0; HASH_BYTES], |k| self.mac_for(k)),
            ..self
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Label, FormatError> {
        let b = block::open(buf, &LABEL_MAGIC, "label", layout::RESERVED)?;
        let state_code = get_u32::<{ layout::STATE }>(b);
        let state = LabelState::from_code(state_code).ok_or(FormatError::Field {
            field: "label.state",
            value: state_code.into(),
        })?;
        let label = Label {
            set_id: SetId(get::<{ layout::SET_ID }, { SetId::BYTES }>(b)),
            device_index: get_u32::<{ layout::DEVICE_INDEX }>(b),
            device_count: get_u32::<{ layout::DEVICE_COUNT }>(b),
            chunk_bytes: get_u32::<{ layout::CHUNK_BYTES }>(b),
            block_bytes: get_u32::<{ layout::BLOCK_BYTES }>(b),
            created_unix_ns: get_u64::<{ layout::CREATED_UNIX_NS }>(b),
            state,
            catalog_offset: get_u64::<{ layout::CATALOG_OFFSET }>(b),
            catalog_bytes: get_u64::<{ layout::CATALOG_BYTES }>(b),
            data_end: get_u64::<{ layout::DATA_END }>(b),
            catalog_digest: get::<{ layout::CATALOG_DIGEST }, HASH_BYTES>(b),
            mac: get::<{ layout::MAC }, HASH_BYTES>(b),
            seal: LabelSeal {
                cipher: get_u32::<{ layout::CIPHER }>(b),
                kdf: get_u32::<{ layout::KDF }>(b),
                kdf_params: std::array::from_fn(|i| {
                    u32::from_le_bytes(
                        b[layout::KDF_PARAMS + 4 * i..][..4]
                            .try_into()
                            .expect("4 bytes"),
                    )
                }),
                kdf_salt: get::<{ layout::KDF_SALT }, 16>(b),
                wrap_nonce: get::<{ layout::WRAP_NONCE }, NONCE_BYTES>(b),
                run_id: get_u64::<{ layout::RUN_ID }>(b),
                wrapped: get::<{ layout::WRAPPED_KEY }, WRAPPED_BYTES>(b),
            },
        };
        label.validate()?;
        Ok(label)
    }

    /// The field rules a decoder enforces (docs/FORMAT.md, "Label"); the
    /// first rule broken, checked in the order the rules are listed there.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |field: &'static str, value: u64| Err(FormatError::Field { field, value });
        if self.device_count == 0 {
            return bad("label.device_count", 0);
        }
        if self.device_index >= self.device_count {
            return bad("label.device_index", self.device_index.into());
        }
        if !chunk_bytes_valid(self.chunk_bytes) {
            return bad("label.chunk_bytes", self.chunk_bytes.into());
        }
        if !self.block_bytes.is_power_of_two()
            || !(DEVICE_BLOCK_BYTES_MIN..=DEVICE_BLOCK_BYTES_MAX).contains(&self.block_bytes)
        {
            return bad("label.block_bytes", self.block_bytes.into());
        }
        let e = &self.seal;
        match e.cipher {
            0 if *e != LabelSeal::NONE => return bad("label.cipher", 0),
            0 => {}
            super::seal::CIPHER_AES_256_GCM => {
                match e.kdf {
                    super::seal::KDF_KEY_FILE => {
                        if e.kdf_params != [0; 3] || e.kdf_salt != [0; 16] {
                            return bad("label.kdf_params", 0);
                        }
                    }
                    super::seal::KDF_PASSPHRASE => {
                        if !super::seal::argon2_params_valid(e.kdf_params) {
                            return bad("label.kdf_params", e.kdf_params[0].into());
                        }
                    }
                    other => return bad("label.kdf", other.into()),
                }
                if e.run_id == 0 {
                    return bad("label.run_id", 0);
                }
            }
            other => return bad("label.cipher", other.into()),
        }
        match self.state {
            LabelState::Writing => {
                // Not valid yet, so not written yet: zero.
                if self.data_end != 0 {
                    return bad("label.data_end", self.data_end);
                }
                if self.catalog_offset != 0 {
                    return bad("label.catalog_offset", self.catalog_offset);
                }
                if self.catalog_bytes != 0 {
                    return bad("label.catalog_bytes", self.catalog_bytes);
                }
                if self.catalog_digest != [0; HASH_BYTES] {
                    let first = self.catalog_digest.iter().position(|&b| b != 0);
                    return bad("label.catalog_digest", first.unwrap_or(0) as u64);
                }
            }
            LabelState::Complete => {
                // Data starts after the label block; the catalog after the data.
                if !is_block_aligned(self.data_end) || self.data_end < BLOCK_BYTES as u64 {
                    return bad("label.data_end", self.data_end);
                }
                if !is_block_aligned(self.catalog_offset) || self.catalog_offset < self.data_end {
                    return bad("label.catalog_offset", self.catalog_offset);
                }
                if self.catalog_bytes < CATALOG_BYTES_MIN as u64
                    || self
                        .catalog_offset
                        .checked_add(self.catalog_bytes)
                        .is_none()
                {
                    return bad("label.catalog_bytes", self.catalog_bytes);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BLOCK_BYTES;

    fn writing() -> Label {
        let set_id = SetId([0xA5; 16]);
        let created_unix_ns = 1_700_000_000_123_456_789;
        Label {
            mac: [0x3C; 32],
            ..Label::new_writing(
                set_id,
                created_unix_ns,
                1 << 20,
                LabelSeal::NONE,
                1,
                3,
                4096,
            )
        }
    }

    fn complete() -> Label {
        Label {
            state: LabelState::Complete,
            data_end: 64 << 20,
            catalog_offset: 64 << 20,
            catalog_bytes: 123_457,
            catalog_digest: [0xD1; 32],
            ..writing()
        }
    }

    fn encode(l: &Label) -> Vec<u8> {
        let mut buf = vec![0xEE; BLOCK_BYTES];
        l.encode_into(&mut buf);
        buf
    }

    /// Encode bypassing `validate`: write the fields, then fix the CRC.
    fn encode_raw(l: &Label) -> Vec<u8> {
        let mut buf = encode(&writing());
        let b: &mut Block = buf.first_chunk_mut().unwrap();
        put_u32::<{ layout::STATE }>(b, l.state.code());
        put_u32::<{ layout::DEVICE_INDEX }>(b, l.device_index);
        put_u32::<{ layout::DEVICE_COUNT }>(b, l.device_count);
        put_u32::<{ layout::CHUNK_BYTES }>(b, l.chunk_bytes);
        put_u32::<{ layout::BLOCK_BYTES }>(b, l.block_bytes);
        put_u64::<{ layout::CATALOG_OFFSET }>(b, l.catalog_offset);
        put_u64::<{ layout::CATALOG_BYTES }>(b, l.catalog_bytes);
        put_u64::<{ layout::DATA_END }>(b, l.data_end);
        put::<{ layout::CATALOG_DIGEST }, 32>(b, l.catalog_digest);
        block::seal(b);
        buf
    }

    fn field_err(field: &'static str, value: u64) -> Result<Label, FormatError> {
        Err(FormatError::Field { field, value })
    }

    #[test]
    fn round_trips() {
        for l in [writing(), complete()] {
            let buf = encode(&l);
            assert_eq!(Label::decode(&buf), Ok(l));
            // A longer buffer: only the first block is read.
            let mut long = buf.clone();
            long.extend_from_slice(&[0xFF; 100]);
            assert_eq!(Label::decode(&long), Ok(l));
        }
    }

    #[test]
    fn layout_is_pinned() {
        let buf = encode(&complete());
        assert_eq!(&buf[0..8], b"PBIOLABL");
        assert_eq!(buf[8..12], 1u32.to_le_bytes());
        assert_eq!(buf[12..16], 2u32.to_le_bytes());
        assert_eq!(buf[16..32], [0xA5; 16]);
        assert_eq!(buf[32..36], 1u32.to_le_bytes());
        assert_eq!(buf[36..40], 3u32.to_le_bytes());
        assert_eq!(buf[40..44], (1u32 << 20).to_le_bytes());
        assert_eq!(buf[44..48], 4096u32.to_le_bytes());
        assert_eq!(buf[48..56], 1_700_000_000_123_456_789u64.to_le_bytes());
        assert_eq!(buf[56..64], (64u64 << 20).to_le_bytes());
        assert_eq!(buf[64..72], 123_457u64.to_le_bytes());
        assert_eq!(buf[72..80], (64u64 << 20).to_le_bytes());
        assert_eq!(buf[80..112], [0xD1; 32]);
        assert_eq!(buf[112..144], [0x3C; 32]);
        assert!(buf[144..4092].iter().all(|&b| b == 0));
        assert_eq!(
            buf[4092..],
            crate::format::crc32c(&buf[..4092]).to_le_bytes()
        );
    }

    #[test]
    fn short_buffer() {
        let buf = encode(&writing());
        for len in [0, 1, 8, 4091, 4095] {
            assert_eq!(
                Label::decode(&buf[..len]),
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
        writing().encode_into(&mut [0u8; 4095]);
    }

    #[test]
    #[should_panic(expected = "invalid label")]
    fn encode_of_invalid_label_panics() {
        Label {
            device_count: 0,
            ..writing()
        }
        .encode_into(&mut [0u8; BLOCK_BYTES]);
    }

    #[test]
    fn mac_covers_every_field() {
        let key = crate::format::mac_key(&[7u8; 32]);
        let sealed = complete().sealed(Some(&key));
        let buf = encode(&sealed);
        assert_eq!(
            sealed.mac,
            *blake3::keyed_hash(&key, &buf[..layout::MAC]).as_bytes()
        );
        assert_eq!(Label::decode(&buf), Ok(sealed));
        assert_eq!(sealed.mac_for(&key), sealed.mac);
        // Without a key: zero.
        assert_eq!(complete().sealed(None).mac, [0; 32]);
        // Another key, or any field changed, gives another MAC.
        let other = crate::format::mac_key(&[8u8; 32]);
        assert_ne!(sealed.mac_for(&other), sealed.mac);
        for changed in [
            Label {
                device_index: 2,
                ..sealed
            },
            Label {
                catalog_digest: [0xD2; 32],
                ..sealed
            },
            Label {
                data_end: 4096,
                catalog_offset: 4096,
                ..sealed
            },
            Label {
                set_id: SetId([0xA6; 16]),
                ..sealed
            },
        ] {
            assert_ne!(changed.mac_for(&key), sealed.mac, "{changed:?}");
        }
        // Every bit of [0, MAC) is covered: flip it, repair the CRC, the
        // MAC no longer matches (when the label still decodes).
        for bit in 0..layout::MAC * 8 {
            let mut buf = buf.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            block::seal(buf.first_chunk_mut().unwrap());
            if let Ok(l) = Label::decode(&buf) {
                assert_ne!(l.mac_for(&key), l.mac, "bit {bit}");
            }
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let good = encode(&complete());
        for bit in 0..BLOCK_BYTES * 8 {
            let mut buf = good.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            let got = Label::decode(&buf);
            if bit / 8 < 8 {
                assert_eq!(
                    got,
                    Err(FormatError::BadMagic { what: "label" }),
                    "bit {bit}"
                );
            } else {
                assert!(
                    matches!(got, Err(FormatError::Checksum { what: "label", .. })),
                    "bit {bit}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn frame_errors() {
        let good = encode(&writing());
        let mut buf = good.clone();
        buf[..8].copy_from_slice(b"PBIORECD");
        assert_eq!(
            Label::decode(&buf),
            Err(FormatError::BadMagic { what: "label" })
        );

        let mut buf = good.clone();
        let b: &mut Block = buf.first_chunk_mut().unwrap();
        put_u32::<{ layout::VERSION }>(b, 2);
        block::seal(b);
        assert_eq!(Label::decode(&buf), Err(FormatError::Version(2)));

        for offset in [layout::RESERVED, 1000, layout::CRC - 1] {
            let mut buf = good.clone();
            buf[offset] = 0x10;
            block::seal(buf.first_chunk_mut().unwrap());
            assert_eq!(
                Label::decode(&buf),
                Err(FormatError::Reserved {
                    what: "label",
                    offset
                })
            );
        }

        let mut buf = good.clone();
        buf[layout::CRC] ^= 1;
        assert!(matches!(
            Label::decode(&buf),
            Err(FormatError::Checksum { .. })
        ));

        let mut buf = good;
        let b: &mut Block = buf.first_chunk_mut().unwrap();
        put_u32::<{ layout::STATE }>(b, 3);
        block::seal(b);
        assert_eq!(Label::decode(&buf), field_err("label.state", 3));
    }

    #[test]
    fn field_rules() {
        let w = writing();
        let c = complete();
        let cases: Vec<(Label, &str, u64)> = vec![
            (
                Label {
                    device_count: 0,
                    device_index: 0,
                    ..w
                },
                "label.device_count",
                0,
            ),
            (
                Label {
                    device_index: 3,
                    ..w
                },
                "label.device_index",
                3,
            ),
            (
                Label {
                    device_index: u32::MAX,
                    ..w
                },
                "label.device_index",
                u32::MAX.into(),
            ),
            (
                Label {
                    chunk_bytes: 0,
                    ..w
                },
                "label.chunk_bytes",
                0,
            ),
            (
                Label {
                    chunk_bytes: 2048,
                    ..w
                },
                "label.chunk_bytes",
                2048,
            ),
            (
                Label {
                    chunk_bytes: 3 << 20,
                    ..w
                },
                "label.chunk_bytes",
                3 << 20,
            ),
            (
                Label {
                    chunk_bytes: 128 << 20,
                    ..w
                },
                "label.chunk_bytes",
                128 << 20,
            ),
            (
                Label {
                    block_bytes: 0,
                    ..w
                },
                "label.block_bytes",
                0,
            ),
            (
                Label {
                    block_bytes: 256,
                    ..w
                },
                "label.block_bytes",
                256,
            ),
            (
                Label {
                    block_bytes: 1000,
                    ..w
                },
                "label.block_bytes",
                1000,
            ),
            (
                Label {
                    block_bytes: 1 << 17,
                    ..w
                },
                "label.block_bytes",
                1 << 17,
            ),
            (
                Label {
                    data_end: 4096,
                    ..w
                },
                "label.data_end",
                4096,
            ),
            (
                Label {
                    catalog_offset: 4096,
                    ..w
                },
                "label.catalog_offset",
                4096,
            ),
            (
                Label {
                    catalog_bytes: 100,
                    ..w
                },
                "label.catalog_bytes",
                100,
            ),
            (
                Label {
                    catalog_digest: [0xD1; 32],
                    ..w
                },
                "label.catalog_digest",
                0,
            ),
            (
                Label {
                    data_end: 4097,
                    ..c
                },
                "label.data_end",
                4097,
            ),
            (
                Label {
                    data_end: 0,
                    catalog_offset: 0,
                    ..c
                },
                "label.data_end",
                0,
            ),
            (
                Label {
                    catalog_offset: (64 << 20) + 512,
                    ..c
                },
                "label.catalog_offset",
                (64 << 20) + 512,
            ),
            (
                Label {
                    catalog_offset: 4096,
                    ..c
                },
                "label.catalog_offset",
                4096,
            ),
            (
                Label {
                    catalog_bytes: 0,
                    ..c
                },
                "label.catalog_bytes",
                0,
            ),
            (
                Label {
                    catalog_bytes: 87,
                    ..c
                },
                "label.catalog_bytes",
                87,
            ),
            (
                Label {
                    catalog_bytes: u64::MAX,
                    ..c
                },
                "label.catalog_bytes",
                u64::MAX,
            ),
        ];
        for (label, field, value) in cases {
            assert_eq!(
                label.validate(),
                Err(FormatError::Field { field, value }),
                "{label:?}"
            );
            assert_eq!(
                Label::decode(&encode_raw(&label)),
                field_err(field, value),
                "{label:?}"
            );
        }
        // The edges that are allowed.
        let ok = [
            Label {
                device_count: 1,
                device_index: 0,
                ..w
            },
            Label {
                chunk_bytes: 4096,
                block_bytes: 512,
                ..w
            },
            Label {
                chunk_bytes: 64 << 20,
                block_bytes: 65536,
                ..w
            },
            Label {
                data_end: 4096,
                catalog_offset: 4096,
                catalog_bytes: 88,
                ..c
            },
        ];
        for label in ok {
            assert_eq!(Label::decode(&encode(&label)), Ok(label));
        }
    }
}
