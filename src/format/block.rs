//! The frame every 4096-byte format block shares (label, record header):
//! magic at 0, version at 8, CRC32C of bytes `[0, CRC)` at `CRC`, and a
//! reserved area of zeros. These three positions are the same in every
//! format version, so a reader can always tell "foreign", "damaged" and
//! "newer version" apart (see docs/FORMAT.md, "Versioning").
//!
//! Field access goes through `get`/`put` with the offset as a const
//! generic: a field that does not fit in the block is a compile error.

use super::{crc32c, FormatError, BLOCK_BYTES, FORMAT_VERSION};

/// One on-media block.
pub type Block = [u8; BLOCK_BYTES];

/// Offset of the 8-byte magic.
pub const MAGIC: usize = 0;
/// Offset of the u32 format version.
pub const VERSION: usize = 8;
/// Offset of the u32 CRC32C, computed over bytes `[0, CRC)`.
pub const CRC: usize = BLOCK_BYTES - 4;

const _: () = assert!(VERSION == MAGIC + 8);
const _: () = assert!(CRC + 4 == BLOCK_BYTES);

/// Read `N` bytes at `OFF`.
#[inline]
pub fn get<const OFF: usize, const N: usize>(b: &Block) -> [u8; N] {
    const { assert!(OFF + N <= BLOCK_BYTES) };
    let mut out = [0u8; N];
    out.copy_from_slice(&b[OFF..OFF + N]);
    out
}

/// Write `N` bytes at `OFF`.
#[inline]
pub fn put<const OFF: usize, const N: usize>(b: &mut Block, v: [u8; N]) {
    const { assert!(OFF + N <= BLOCK_BYTES) };
    b[OFF..OFF + N].copy_from_slice(&v);
}

#[inline]
pub fn get_u32<const OFF: usize>(b: &Block) -> u32 {
    u32::from_le_bytes(get::<OFF, 4>(b))
}

#[inline]
pub fn get_u64<const OFF: usize>(b: &Block) -> u64 {
    u64::from_le_bytes(get::<OFF, 8>(b))
}

#[inline]
pub fn put_u32<const OFF: usize>(b: &mut Block, v: u32) {
    put::<OFF, 4>(b, v.to_le_bytes())
}

#[inline]
pub fn put_u64<const OFF: usize>(b: &mut Block, v: u64) {
    put::<OFF, 8>(b, v.to_le_bytes())
}

/// The first block of `out`, zeroed, with magic and version written.
/// Panics if `out` is shorter than a block (caller bug, per the encode contracts).
pub fn start<'a>(out: &'a mut [u8], magic: &[u8; 8], what: &str) -> &'a mut Block {
    let have = out.len();
    let Some(b) = out.first_chunk_mut::<BLOCK_BYTES>() else {
        panic!("{what} encode: output buffer is {have} bytes, need {BLOCK_BYTES}");
    };
    b.fill(0);
    put::<MAGIC, 8>(b, *magic);
    put_u32::<VERSION>(b, FORMAT_VERSION);
    b
}

/// Write the block CRC; the last step of an encode.
pub fn seal(b: &mut Block) {
    let crc = crc32c(&b[..CRC]);
    put_u32::<CRC>(b, crc);
}

/// Check the frame of the block at the start of `buf`, in the order
/// length, magic, CRC, version, reserved area `[reserved_from, CRC)`.
pub fn open<'a>(
    buf: &'a [u8],
    magic: &[u8; 8],
    what: &'static str,
    reserved_from: usize,
) -> Result<&'a Block, FormatError> {
    let b = buf.first_chunk::<BLOCK_BYTES>().ok_or(FormatError::Short {
        have: buf.len(),
        need: BLOCK_BYTES,
    })?;
    if get::<MAGIC, 8>(b) != *magic {
        return Err(FormatError::BadMagic { what });
    }
    let stored = get_u32::<CRC>(b);
    let computed = crc32c(&b[..CRC]);
    // Under the fuzzer (`cargo fuzz` sets cfg(fuzzing)) checksums are not
    // checked, so that mutated input reaches the field rules behind them.
    if stored != computed && !cfg!(fuzzing) {
        return Err(FormatError::Checksum {
            what,
            stored,
            computed,
        });
    }
    let version = get_u32::<VERSION>(b);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version(version));
    }
    check_zero(&b[..CRC], reserved_from, what)?;
    Ok(b)
}

/// Every byte of `b[from..]` is zero; else the offset of the first that is not.
pub fn check_zero(b: &[u8], from: usize, what: &'static str) -> Result<(), FormatError> {
    let area = b.get(from..).unwrap_or(&[]);
    // OR-fold vectorizes; the position is only searched for on failure.
    if area.iter().fold(0u8, |acc, &x| acc | x) == 0 {
        return Ok(());
    }
    let at = area.iter().position(|&x| x != 0).unwrap_or(0);
    Err(FormatError::Reserved {
        what,
        offset: from + at,
    })
}
