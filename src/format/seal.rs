//! `--encrypt` (issue 22, docs/FORMAT.md §5.2, "amendment (encryption)"):
//! envelope keys and AES-256-GCM sealing of records and catalogs. The one
//! place that names the `ring` crate. Pure bytes: randomness (data keys,
//! run ids, wrap nonces) is passed in by the caller.
//!
//! - A set has a random 32-byte **data key**. Its label carries it sealed
//!   (wrapped) under a **key-encryption key** derived from the user's key
//!   file (`LabelSeal`): a wrong key fails the unwrap at the label.
//! - Records are sealed under a **record key** derived per (data key, run
//!   id, device index); the nonce is the record's sequence number and a
//!   domain (payload, file info), so no (key, nonce) pair ever repeats: a
//!   sequence number is written once per run and device, and another run
//!   (a resumed one) has another random run id, hence another key.
//! - The encoded catalog is sealed in pages of `CATALOG_PAGE_BYTES` under
//!   a catalog key derived per (data key, run id), page index as nonce.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

use super::record::RecordHeader;
use super::{MacKey, SetId};

/// Bytes of a data key and of a user's key material used.
pub const KEY_BYTES: usize = 32;
/// Bytes of an AES-256-GCM tag.
pub const TAG_BYTES: usize = 16;
/// Bytes of the wrap nonce in the label.
pub const NONCE_BYTES: usize = 12;
/// Bytes of a wrapped data key: the key sealed, then its tag.
pub const WRAPPED_BYTES: usize = KEY_BYTES + TAG_BYTES;
/// Cipher id of AES-256-GCM (label and record header `cipher`).
pub const CIPHER_AES_256_GCM: u32 = 1;
/// KDF id of `--key-file`: the key-encryption key is
/// `BLAKE3.derive_key(KEK_CONTEXT, file contents)`.
pub const KDF_KEY_FILE: u32 = 1;
/// KDF id of `--passphrase-file`: the key-encryption key is argon2id
/// (version 0x13) of the passphrase with the label's salt and parameters
/// (memory KiB, passes, lanes), 32 bytes out.
pub const KDF_PASSPHRASE: u32 = 2;
/// argon2id parameters a new set gets: 64 MiB, 3 passes, 1 lane.
pub const ARGON2_PARAMS_DEFAULT: [u32; 3] = [64 << 10, 3, 1];
/// Largest argon2id memory a reader accepts from a label (1 GiB): a
/// crafted label cannot make a reader allocate more.
pub const ARGON2_MEMORY_KIB_MAX: u32 = 1 << 20;
/// Largest argon2id passes and lanes a reader accepts from a label.
pub const ARGON2_PASSES_MAX: u32 = 16;
pub const ARGON2_LANES_MAX: u32 = 16;

/// argon2id parameters a reader accepts: `[memory KiB, passes, lanes]`
/// with `1 <= passes <= 16`, `1 <= lanes <= 16`,
/// `8 * lanes <= memory KiB <= 1 GiB`.
pub fn argon2_params_valid([m, t, p]: [u32; 3]) -> bool {
    (1..=ARGON2_PASSES_MAX).contains(&t)
        && (1..=ARGON2_LANES_MAX).contains(&p)
        && (8 * p..=ARGON2_MEMORY_KIB_MAX).contains(&m)
}

/// Plaintext bytes of one sealed catalog page (the last may be shorter);
/// each page is followed by its tag on media.
pub const CATALOG_PAGE_BYTES: usize = 64 << 10;

const KEK_CONTEXT: &str = "pbio 2026-12 key wrapping v1";
const RECORD_KEY_CONTEXT: &str = "pbio 2026-12 record sealing v1";
const CATALOG_KEY_CONTEXT: &str = "pbio 2026-12 catalog sealing v1";
const SET_MAC_CONTEXT: &str = "pbio 2026-12 sealed set authentication v1";

/// Nonce domains under one record key.
const DOMAIN_PAYLOAD: u32 = 0;
const DOMAIN_INFO: u32 = 1;

/// Why sealed bytes did not open, or a key did not fit.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The wrapped data key did not open: another key, or a forged label.
    #[error("the key does not open this set's data key (wrong key, or the label was altered)")]
    WrongKey,
    /// The set is encrypted and no key or passphrase was given.
    #[error("the set is encrypted and no --key-file or --passphrase-file was given to open it")]
    NoKey,
    /// A record's payload or file info, or a catalog page, fails its tag.
    #[error("{what} fails authentication (altered or damaged)")]
    Authentication { what: &'static str },
    /// The passphrase's KDF could not run (parameters out of range).
    #[error("key derivation: {0}")]
    Kdf(String),
    /// Sealed bytes of impossible length.
    #[error("sealed {what} of {bytes} bytes is malformed")]
    Length { what: &'static str, bytes: u64 },
}

/// The envelope in a label's reserved area (docs/FORMAT.md §4); all zero
/// (`LabelSeal::NONE`) for a set written without `--encrypt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelSeal {
    /// 0 none, `CIPHER_AES_256_GCM`.
    pub cipher: u32,
    /// `KDF_KEY_FILE` (0 without a cipher).
    pub kdf: u32,
    /// KDF parameters (argon2id memory KiB, passes, lanes; 0 for a key file).
    pub kdf_params: [u32; 3],
    /// KDF salt (zero for a key file).
    pub kdf_salt: [u8; 16],
    /// Nonce of the wrap (random per wrap).
    pub wrap_nonce: [u8; NONCE_BYTES],
    /// The writing run's random id (never 0 when sealed).
    pub run_id: u64,
    /// The data key sealed under the key-encryption key, then its tag.
    pub wrapped: [u8; WRAPPED_BYTES],
}

impl Default for LabelSeal {
    fn default() -> Self {
        LabelSeal::NONE
    }
}

impl LabelSeal {
    pub const NONE: LabelSeal = LabelSeal {
        cipher: 0,
        kdf: 0,
        kdf_params: [0; 3],
        kdf_salt: [0; 16],
        wrap_nonce: [0; NONCE_BYTES],
        run_id: 0,
        wrapped: [0; WRAPPED_BYTES],
    };

    pub fn is_sealed(&self) -> bool {
        self.cipher != 0
    }

    /// The associated data of the wrap: the set and every envelope field
    /// but the run id and the wrapped key (which a re-wrap or a resumed
    /// run rewrites).
    fn wrap_aad(&self, set_id: SetId) -> [u8; 52] {
        let mut a = [0u8; 52];
        a[..16].copy_from_slice(&set_id.0);
        a[16..20].copy_from_slice(&self.cipher.to_le_bytes());
        a[20..24].copy_from_slice(&self.kdf.to_le_bytes());
        for (i, p) in self.kdf_params.iter().enumerate() {
            a[24 + 4 * i..28 + 4 * i].copy_from_slice(&p.to_le_bytes());
        }
        a[36..52].copy_from_slice(&self.kdf_salt);
        a
    }
}

/// A user's key-encryption key (from `--key-file`, or from
/// `--passphrase-file` with a label's KDF parameters and salt).
#[derive(Clone)]
pub struct UserKey {
    kek: [u8; KEY_BYTES],
    kdf: u32,
    kdf_params: [u32; 3],
    kdf_salt: [u8; 16],
}

impl UserKey {
    /// The key-encryption key of a key file's contents.
    pub fn from_key_file(contents: &[u8]) -> UserKey {
        UserKey {
            kek: blake3::derive_key(KEK_CONTEXT, contents),
            kdf: KDF_KEY_FILE,
            kdf_params: [0; 3],
            kdf_salt: [0; 16],
        }
    }

    /// The key-encryption key of a passphrase: argon2id with `params`
    /// (`argon2_params_valid`, else `SealError::Kdf`) and `salt`.
    pub fn from_passphrase(
        passphrase: &[u8],
        params: [u32; 3],
        salt: [u8; 16],
    ) -> Result<UserKey, SealError> {
        if !argon2_params_valid(params) {
            return Err(SealError::Kdf(format!(
                "argon2id parameters {params:?} out of range"
            )));
        }
        let [m, t, p] = params;
        let argon = argon2::Params::new(m, t, p, Some(KEY_BYTES))
            .map_err(|e| SealError::Kdf(e.to_string()))?;
        let mut kek = [0u8; KEY_BYTES];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon)
            .hash_password_into(passphrase, &salt, &mut kek)
            .map_err(|e| SealError::Kdf(e.to_string()))?;
        Ok(UserKey {
            kek,
            kdf: KDF_PASSPHRASE,
            kdf_params: params,
            kdf_salt: salt,
        })
    }
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserKey(..)")
    }
}

/// A set's data key.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; KEY_BYTES]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn aes(key: &[u8; KEY_BYTES]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

fn nonce(counter: u64, domain: u32) -> Nonce {
    let mut n = [0u8; NONCE_BYTES];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    n[8..].copy_from_slice(&domain.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl DataKey {
    /// A data key from random bytes.
    pub fn from_random(bytes: [u8; KEY_BYTES]) -> DataKey {
        DataKey(bytes)
    }

    /// The envelope of this key for a label: wrapped under `user` with
    /// `wrap_nonce` (random), for a run `run_id` (random, not 0).
    pub fn wrap(
        &self,
        user: &UserKey,
        set_id: SetId,
        run_id: u64,
        wrap_nonce: [u8; NONCE_BYTES],
    ) -> LabelSeal {
        assert_ne!(run_id, 0, "a run id of 0 means not sealed (caller bug)");
        let mut seal = LabelSeal {
            cipher: CIPHER_AES_256_GCM,
            kdf: user.kdf,
            kdf_params: user.kdf_params,
            kdf_salt: user.kdf_salt,
            wrap_nonce,
            run_id,
            ..LabelSeal::NONE
        };
        let aad = seal.wrap_aad(set_id);
        let mut key = self.0;
        let tag = aes(&user.kek)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(wrap_nonce),
                Aad::from(&aad[..]),
                &mut key,
            )
            .expect("AES-GCM seals 32 bytes");
        seal.wrapped[..KEY_BYTES].copy_from_slice(&key);
        seal.wrapped[KEY_BYTES..].copy_from_slice(tag.as_ref());
        seal
    }

    /// The data key a label's envelope holds, opened with `user`.
    pub fn unwrap(seal: &LabelSeal, user: &UserKey, set_id: SetId) -> Result<DataKey, SealError> {
        if seal.cipher != CIPHER_AES_256_GCM
            || seal.kdf != user.kdf
            || seal.kdf_params != user.kdf_params
            || seal.kdf_salt != user.kdf_salt
        {
            return Err(SealError::WrongKey);
        }
        let aad = seal.wrap_aad(set_id);
        let mut key: [u8; KEY_BYTES] = seal.wrapped[..KEY_BYTES].try_into().expect("32 bytes");
        let tag: [u8; TAG_BYTES] = seal.wrapped[KEY_BYTES..].try_into().expect("16 bytes");
        aes(&user.kek)
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(seal.wrap_nonce),
                Aad::from(&aad[..]),
                Tag::from(tag),
                &mut key,
                0..,
            )
            .map_err(|_| SealError::WrongKey)?;
        Ok(DataKey(key))
    }

    /// The MAC key of a sealed set's label and catalog MACs (section 6.5):
    /// derived from the data key, so that a key change (a re-wrap) keeps
    /// them.
    pub fn mac_key(&self) -> MacKey {
        blake3::derive_key(SET_MAC_CONTEXT, &self.0)
    }

    /// The key of the records one run writes on one device.
    pub fn record_key(&self, run_id: u64, device_index: u32) -> RecordKey {
        let mut m = [0u8; KEY_BYTES + 12];
        m[..KEY_BYTES].copy_from_slice(&self.0);
        m[KEY_BYTES..KEY_BYTES + 8].copy_from_slice(&run_id.to_le_bytes());
        m[KEY_BYTES + 8..].copy_from_slice(&device_index.to_le_bytes());
        RecordKey {
            key: aes(&blake3::derive_key(RECORD_KEY_CONTEXT, &m)),
            run_id,
            device_index,
        }
    }

    /// The key of the catalog one run writes (the same on every device).
    fn catalog_key(&self, run_id: u64) -> LessSafeKey {
        let mut m = [0u8; KEY_BYTES + 8];
        m[..KEY_BYTES].copy_from_slice(&self.0);
        m[KEY_BYTES..].copy_from_slice(&run_id.to_le_bytes());
        aes(&blake3::derive_key(CATALOG_KEY_CONTEXT, &m))
    }

    /// The encoded catalog sealed for media: each page of
    /// `CATALOG_PAGE_BYTES` (the last shorter) followed by its tag, page
    /// `i`'s nonce being `i` and a last-page flag (so that a catalog cut
    /// at a page boundary does not open).
    pub fn seal_catalog(&self, run_id: u64, encoded: &[u8]) -> Vec<u8> {
        let key = self.catalog_key(run_id);
        let mut out = Vec::with_capacity(sealed_catalog_bytes(encoded.len() as u64) as usize);
        let pages = encoded.len().div_ceil(CATALOG_PAGE_BYTES);
        for (i, page) in encoded.chunks(CATALOG_PAGE_BYTES).enumerate() {
            let start = out.len();
            out.extend_from_slice(page);
            let last = u32::from(i + 1 == pages);
            let tag = key
                .seal_in_place_separate_tag(nonce(i as u64, last), Aad::empty(), &mut out[start..])
                .expect("AES-GCM seals a page");
            out.extend_from_slice(tag.as_ref());
        }
        out
    }

    /// The encoded catalog of a sealed one (`seal_catalog`), every page
    /// authenticated.
    pub fn open_catalog(&self, run_id: u64, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let key = self.catalog_key(run_id);
        let page_media = CATALOG_PAGE_BYTES + TAG_BYTES;
        let mut out = Vec::with_capacity(sealed.len());
        let pages = sealed.len().div_ceil(page_media);
        for (i, page) in sealed.chunks(page_media).enumerate() {
            if page.len() <= TAG_BYTES {
                return Err(SealError::Length {
                    what: "catalog",
                    bytes: sealed.len() as u64,
                });
            }
            let (text, tag) = page.split_at(page.len() - TAG_BYTES);
            let start = out.len();
            out.extend_from_slice(text);
            let tag: [u8; TAG_BYTES] = tag.try_into().expect("16 bytes");
            key.open_in_place_separate_tag(
                nonce(i as u64, u32::from(i + 1 == pages)),
                Aad::empty(),
                Tag::from(tag),
                &mut out[start..],
                0..,
            )
            .map_err(|_| SealError::Authentication {
                what: "catalog page",
            })?;
        }
        Ok(out)
    }
}

/// What a backup run with `--encrypt` seals with: the set's data key and
/// its envelope for the labels (with the run's id).
#[derive(Clone, Debug)]
pub struct SetEncryption {
    pub data_key: DataKey,
    pub label: LabelSeal,
}

impl SetEncryption {
    /// A new set's encryption: `random` gives the data key (32 bytes), the
    /// run id (8, made non-zero) and the wrap nonce (12).
    pub fn new(user: &UserKey, set_id: SetId, random: [u8; 52]) -> SetEncryption {
        let data_key = DataKey(random[..32].try_into().expect("32 bytes"));
        let run_id = u64::from_le_bytes(random[32..40].try_into().expect("8 bytes")).max(1);
        let nonce = random[40..52].try_into().expect("12 bytes");
        let label = data_key.wrap(user, set_id, run_id, nonce);
        SetEncryption { data_key, label }
    }

    /// The record key of this run on device `device_index`.
    pub fn record_key(&self, device_index: u32) -> RecordKey {
        self.data_key.record_key(self.label.run_id, device_index)
    }

    /// The encoded catalog sealed for this run's devices.
    pub fn seal_catalog(&self, encoded: &[u8]) -> Vec<u8> {
        self.data_key.seal_catalog(self.label.run_id, encoded)
    }
}

/// Bytes a catalog of `encoded` bytes takes sealed.
pub fn sealed_catalog_bytes(encoded: u64) -> u64 {
    encoded + encoded.div_ceil(CATALOG_PAGE_BYTES as u64) * TAG_BYTES as u64
}

/// How a record is sealed (record header's seal area, docs/FORMAT.md
/// §5.2); `RecordSeal::NONE` (all zero) on a record not sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RecordSeal {
    /// The writing run's id; 0: not sealed.
    pub run_id: u64,
    /// Tag of the sealed file-info area.
    pub info_tag: [u8; TAG_BYTES],
    /// Tag of the sealed stored payload.
    pub payload_tag: [u8; TAG_BYTES],
}

impl RecordSeal {
    pub const NONE: RecordSeal = RecordSeal {
        run_id: 0,
        info_tag: [0; TAG_BYTES],
        payload_tag: [0; TAG_BYTES],
    };

    pub fn is_sealed(&self) -> bool {
        self.run_id != 0
    }
}

/// The key of one run's records on one device.
pub struct RecordKey {
    key: LessSafeKey,
    pub run_id: u64,
    pub device_index: u32,
}

/// The framing fields of a record (what a reader without the key still
/// checks), the associated data of both of its seals.
fn record_aad(h: &RecordHeader) -> [u8; 72] {
    let mut a = [0u8; 72];
    let mut at = 0;
    let mut put = |b: &[u8]| {
        a[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    };
    put(&h.kind.code().to_le_bytes());
    put(&h.set_id.0);
    put(&h.device_index.to_le_bytes());
    put(&h.payload_bytes.to_le_bytes());
    put(&h.sequence.to_le_bytes());
    put(&h.file_id.to_le_bytes());
    put(&h.segment_id.to_le_bytes());
    put(&h.file_offset.to_le_bytes());
    put(&h.file_size.to_le_bytes());
    put(&h.transform.codec.code().to_le_bytes());
    put(&h.transform.stored_bytes.to_le_bytes());
    debug_assert_eq!(at, 72);
    a
}

impl RecordKey {
    /// Seal a record's file-info area and stored payload in place.
    /// `header` has its final framing (codec, stored bytes; the CRC is of
    /// the sealed bytes, computed after). Its `sequence` must be new under
    /// this key (the caller writes each sequence number once per run).
    pub fn seal(&self, header: &RecordHeader, info: &mut [u8], stored: &mut [u8]) -> RecordSeal {
        let aad = record_aad(header);
        let seal_one = |domain, bytes: &mut [u8]| -> [u8; TAG_BYTES] {
            let tag = self
                .key
                .seal_in_place_separate_tag(nonce(header.sequence, domain), Aad::from(&aad), bytes)
                .expect("AES-GCM seals a record");
            tag.as_ref().try_into().expect("16 bytes")
        };
        RecordSeal {
            run_id: self.run_id,
            info_tag: seal_one(DOMAIN_INFO, info),
            payload_tag: seal_one(DOMAIN_PAYLOAD, stored),
        }
    }

    /// Open a sealed record's file-info area in place.
    pub fn open_info(&self, header: &RecordHeader, info: &mut [u8]) -> Result<(), SealError> {
        let tag = header.transform.seal.info_tag;
        self.open_part(header, DOMAIN_INFO, tag, info, "record file info")
    }

    /// Open a sealed record's stored payload in place.
    pub fn open_payload(&self, header: &RecordHeader, stored: &mut [u8]) -> Result<(), SealError> {
        let tag = header.transform.seal.payload_tag;
        self.open_part(header, DOMAIN_PAYLOAD, tag, stored, "record payload")
    }

    /// Open the part of a record sealed in `domain` with `tag`, in place;
    /// `what` names it in the error.
    fn open_part(
        &self,
        header: &RecordHeader,
        domain: u32,
        tag: [u8; TAG_BYTES],
        bytes: &mut [u8],
        what: &'static str,
    ) -> Result<(), SealError> {
        let aad = record_aad(header);
        self.key
            .open_in_place_separate_tag(
                nonce(header.sequence, domain),
                Aad::from(&aad),
                Tag::from(tag),
                bytes,
                0..,
            )
            .map(|_| ())
            .map_err(|_| SealError::Authentication { what })
    }
}

/// The keys this process holds: the user's (from `--key-file`) and the
/// data keys of the sets it opened with it. The reading side (media,
/// restore's readers, scan) looks a set's data key up by its set id
/// instead of carrying it through every layer; only the CLI sets the
/// user's key.
pub mod keyring {
    use super::*;
    use std::sync::Mutex;

    /// The secret the user gave.
    #[derive(Clone)]
    enum Secret {
        Key(UserKey),
        /// A passphrase, and the keys derived from it (per label salt).
        Passphrase(Vec<u8>, Vec<UserKey>),
    }

    static USER: Mutex<Option<Secret>> = Mutex::new(None);
    static SETS: Mutex<Vec<(SetId, DataKey)>> = Mutex::new(Vec::new());

    /// Hold the user's key for the sets this process opens.
    pub fn set_user_key(key: UserKey) {
        *USER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Secret::Key(key));
    }

    /// Hold the user's passphrase (`--passphrase-file`) instead.
    pub fn set_passphrase(passphrase: Vec<u8>) {
        *USER.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Secret::Passphrase(passphrase, Vec::new()));
    }

    /// The user's key for a new set: the key file's, or the passphrase's
    /// with the default argon2id parameters and `salt` (random).
    pub fn new_set_key(salt: [u8; 16]) -> Option<UserKey> {
        match USER.lock().unwrap_or_else(|e| e.into_inner()).clone()? {
            Secret::Key(k) => Some(k),
            Secret::Passphrase(p, _) => {
                UserKey::from_passphrase(&p, ARGON2_PARAMS_DEFAULT, salt).ok()
            }
        }
    }

    /// The user's key for a label's envelope (a passphrase derived with
    /// its parameters and salt, once per salt).
    fn user_key_for(seal: &LabelSeal) -> Option<UserKey> {
        let mut user = USER.lock().unwrap_or_else(|e| e.into_inner());
        match user.as_mut()? {
            Secret::Key(k) => Some(k.clone()),
            Secret::Passphrase(p, derived) => {
                if seal.kdf != KDF_PASSPHRASE {
                    return None;
                }
                let found = derived
                    .iter()
                    .find(|k| k.kdf_params == seal.kdf_params && k.kdf_salt == seal.kdf_salt);
                if let Some(k) = found {
                    return Some(k.clone());
                }
                let k = UserKey::from_passphrase(p, seal.kdf_params, seal.kdf_salt).ok()?;
                derived.push(k.clone());
                Some(k)
            }
        }
    }

    /// A secret was given.
    fn has_secret() -> bool {
        USER.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Remember a set's data key (opened or created).
    pub fn insert(set_id: SetId, key: DataKey) {
        let mut sets = SETS.lock().unwrap_or_else(|e| e.into_inner());
        sets.retain(|(s, _)| *s != set_id);
        sets.push((set_id, key));
    }

    /// A set's data key, when this process opened or created it.
    pub fn data_key(set_id: SetId) -> Option<DataKey> {
        let sets = SETS.lock().unwrap_or_else(|e| e.into_inner());
        sets.iter()
            .find(|(s, _)| *s == set_id)
            .map(|(_, k)| k.clone())
    }

    /// Why a sealed set cannot be opened here.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Refusal {
        /// No key was given.
        NoKey,
        /// The key given does not open it.
        WrongKey,
    }

    impl From<Refusal> for SealError {
        fn from(refusal: Refusal) -> SealError {
            match refusal {
                Refusal::NoKey => SealError::NoKey,
                Refusal::WrongKey => SealError::WrongKey,
            }
        }
    }

    /// The data key of a sealed set from its label's envelope, opened with
    /// the user's key and remembered.
    pub fn open(set_id: SetId, seal: &LabelSeal) -> Result<DataKey, Refusal> {
        if let Some(key) = data_key(set_id) {
            // Opened already: the envelope must still open with the user's
            // key (another device may carry a forged one).
            if has_secret() {
                let opened = user_key_for(seal).map(|u| DataKey::unwrap(seal, &u, set_id));
                if opened.as_ref().is_some_and(|o| o.as_ref() == Ok(&key)) {
                    return Ok(key);
                }
                return Err(Refusal::WrongKey);
            }
            return Ok(key);
        }
        if !has_secret() {
            return Err(Refusal::NoKey);
        }
        let user = user_key_for(seal).ok_or(Refusal::WrongKey)?;
        let key = DataKey::unwrap(seal, &user, set_id).map_err(|_| Refusal::WrongKey)?;
        insert(set_id, key.clone());
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{RecordKind, Transform};

    fn header(sequence: u64) -> RecordHeader {
        RecordHeader {
            kind: RecordKind::Data,
            set_id: SetId([7; 16]),
            device_index: 2,
            sequence,
            file_id: 3,
            segment_id: 4,
            file_offset: 1 << 20,
            payload_bytes: 9,
            file_size: 4 << 20,
            payload_crc: 0,
            transform: Transform::RAW,
        }
    }

    #[test]
    fn wrap_opens_with_its_key_only() {
        let data = DataKey::from_random([0x42; 32]);
        let user = UserKey::from_key_file(&[1; 32]);
        let set = SetId([9; 16]);
        let seal = data.wrap(&user, set, 77, [3; 12]);
        assert_eq!(DataKey::unwrap(&seal, &user, set), Ok(data.clone()));
        let other = UserKey::from_key_file(&[2; 32]);
        assert_eq!(
            DataKey::unwrap(&seal, &other, set),
            Err(SealError::WrongKey)
        );
        assert_eq!(
            DataKey::unwrap(&seal, &user, SetId([8; 16])),
            Err(SealError::WrongKey)
        );
        let mut bent = seal;
        bent.wrap_nonce[0] ^= 1;
        assert_eq!(DataKey::unwrap(&bent, &user, set), Err(SealError::WrongKey));
        // The plain key is not in the envelope.
        assert!(!seal.wrapped.windows(8).any(|w| w == [0x42; 8]));
    }

    #[test]
    fn passphrase_keys_wrap_with_their_parameters() {
        let data = DataKey::from_random([0x17; 32]);
        let params = [64, 1, 1];
        let user = UserKey::from_passphrase(b"correct horse", params, [4; 16]).unwrap();
        let set = SetId([1; 16]);
        let seal = data.wrap(&user, set, 5, [0; 12]);
        assert_eq!(
            (seal.kdf, seal.kdf_params, seal.kdf_salt),
            (KDF_PASSPHRASE, params, [4; 16])
        );
        assert_eq!(DataKey::unwrap(&seal, &user, set), Ok(data.clone()));
        let wrong = UserKey::from_passphrase(b"battery staple", params, [4; 16]).unwrap();
        assert_eq!(
            DataKey::unwrap(&seal, &wrong, set),
            Err(SealError::WrongKey)
        );
        let file = UserKey::from_key_file(b"correct horse");
        assert_eq!(DataKey::unwrap(&seal, &file, set), Err(SealError::WrongKey));
        // Hostile parameters are refused before any allocation.
        for bad in [
            [0, 1, 1],
            [ARGON2_MEMORY_KIB_MAX + 1, 1, 1],
            [64, 0, 1],
            [64, 17, 1],
            [64, 1, 0],
            [8, 1, 2],
        ] {
            assert!(
                UserKey::from_passphrase(b"x", bad, [0; 16]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn records_open_only_with_their_framing() {
        let data = DataKey::from_random([5; 32]);
        let key = data.record_key(99, 2);
        let h = header(10);
        let (mut info, mut payload) = (b"info-bytes".to_vec(), b"the-bytes".to_vec());
        let seal = key.seal(&h, &mut info, &mut payload);
        assert_ne!(&payload, b"the-bytes");
        let h = RecordHeader {
            transform: Transform {
                seal,
                ..h.transform
            },
            ..h
        };
        let (mut i2, mut p2) = (info.clone(), payload.clone());
        key.open_info(&h, &mut i2).unwrap();
        key.open_payload(&h, &mut p2).unwrap();
        assert_eq!((&i2[..], &p2[..]), (&b"info-bytes"[..], &b"the-bytes"[..]));
        // Another sequence, offset, device or run: refused.
        for bent in [
            RecordHeader { sequence: 11, ..h },
            RecordHeader {
                file_offset: 0,
                ..h
            },
        ] {
            let mut p = payload.clone();
            assert!(key.open_payload(&bent, &mut p).is_err());
        }
        let mut p = payload.clone();
        assert!(data.record_key(98, 2).open_payload(&h, &mut p).is_err());
        assert!(data.record_key(99, 1).open_payload(&h, &mut p).is_err());
        let mut p = payload.clone();
        p[3] ^= 0x10;
        assert!(key.open_payload(&h, &mut p).is_err());
    }

    #[test]
    fn catalog_pages_round_trip_and_refuse_any_change() {
        let data = DataKey::from_random([6; 32]);
        let encoded: Vec<u8> = (0..CATALOG_PAGE_BYTES * 2 + 100).map(|i| i as u8).collect();
        let sealed = data.seal_catalog(5, &encoded);
        assert_eq!(
            sealed.len() as u64,
            sealed_catalog_bytes(encoded.len() as u64)
        );
        assert_eq!(data.open_catalog(5, &sealed).unwrap(), encoded);
        assert!(data.open_catalog(6, &sealed).is_err());
        for at in [0, CATALOG_PAGE_BYTES, sealed.len() - 1] {
            let mut bent = sealed.clone();
            bent[at] ^= 1;
            assert!(data.open_catalog(5, &bent).is_err(), "{at}");
        }
        assert!(data.open_catalog(5, &sealed[..sealed.len() - 1]).is_err());
        let page = CATALOG_PAGE_BYTES + TAG_BYTES;
        assert!(data.open_catalog(5, &sealed[..2 * page]).is_err());
    }
}
