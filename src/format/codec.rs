//! Record payload compression (docs/FORMAT.md §5, `codec`): pure bytes,
//! the one place that names the zstd and lz4_flex crates. Each record's
//! payload is compressed alone, so a record still restores alone.
//!
//! Decompression takes media bytes, which may be crafted: it writes into
//! a buffer of exactly the header's `payload_bytes` and never more (a
//! "bomb" that would expand further is an error, not an allocation), and
//! the result must fill that buffer exactly.

use super::record::Codec;

/// A compression setting: the codec and, for zstd, its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    pub codec: Codec,
    /// zstd's level (1 ..= 22; negative levels are zstd's fast modes); 0
    /// for lz4.
    pub level: i32,
}

impl Compression {
    /// zstd's default level for `--compress zstd`.
    pub const ZSTD_LEVEL_DEFAULT: i32 = 3;
}

/// Why stored bytes did not decompress to the payload.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecompressError {
    #[error("{codec:?} payload is corrupt: {why}")]
    Corrupt { codec: Codec, why: String },
    /// `--encrypt`: the stored bytes do not open (altered, or a record not
    /// sealed in an encrypted set).
    #[error("{0}")]
    Seal(#[from] super::seal::SealError),
    /// It expands beyond the header's `payload_bytes` (a bomb), or stops
    /// short of it.
    #[error("{codec:?} payload decompresses to {got} bytes, the header says {want}")]
    Length {
        codec: Codec,
        got: String,
        want: u32,
    },
}

/// Compress `payload` into `out` (grown as the codec needs). Returns the
/// compressed length when it is strictly shorter than the payload, else
/// None: the record is stored raw.
pub fn compress(setting: Compression, payload: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    Compressor::new(setting).compress(payload, out)
}

/// A compression context kept across records (one per worker thread):
/// its allocations are made once.
pub struct Compressor {
    setting: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    pub fn new(setting: Compression) -> Compressor {
        let zstd = match setting.codec {
            Codec::Zstd => zstd::bulk::Compressor::new(setting.level).ok(),
            _ => None,
        };
        Compressor { setting, zstd }
    }

    /// The codec this context compresses with.
    pub fn codec(&self) -> Codec {
        self.setting.codec
    }

    /// As `compress`, reusing this context.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        if payload.len() < 2 {
            return None;
        }
        let n = match (&mut self.zstd, self.setting.codec) {
            // zstd stops when the output would not be shorter.
            (Some(z), Codec::Zstd) => {
                out.resize(payload.len() - 1, 0);
                z.compress_to_buffer(payload, &mut out[..]).ok()?
            }
            // lz4_flex wants room for its worst case.
            (_, Codec::Lz4) => {
                out.resize(lz4_flex::block::get_maximum_output_size(payload.len()), 0);
                lz4_flex::block::compress_into(payload, out).ok()?
            }
            _ => return None,
        };
        (1..payload.len()).contains(&n).then_some(n)
    }
}

/// Decompress `stored` (a record's stored bytes, hostile) into `out`,
/// whose length is the header's `payload_bytes`: Ok only when it fills
/// `out` exactly, never writing past it.
pub fn decompress(codec: Codec, stored: &[u8], out: &mut [u8]) -> Result<(), DecompressError> {
    let want = out.len() as u32;
    let got = match codec {
        Codec::Raw => {
            if stored.len() != out.len() {
                return Err(DecompressError::Length {
                    codec,
                    got: stored.len().to_string(),
                    want,
                });
            }
            out.copy_from_slice(stored);
            return Ok(());
        }
        Codec::Zstd => {
            // Bounded by `out`: a frame that declares or produces more is
            // refused by zstd ("Destination buffer is too small").
            let mut d = zstd::bulk::Decompressor::new().map_err(|e| corrupt(codec, e))?;
            match d.decompress_to_buffer(stored, out) {
                Ok(n) => n,
                Err(e) if e.to_string().contains("too small") => return Err(too_long(codec, want)),
                Err(e) => return Err(corrupt(codec, e)),
            }
        }
        Codec::Lz4 => match lz4_flex::block::decompress_into(stored, out) {
            Ok(n) => n,
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) => {
                return Err(too_long(codec, want))
            }
            Err(e) => return Err(corrupt(codec, e)),
        },
    };
    if got != out.len() {
        return Err(DecompressError::Length {
            codec,
            got: got.to_string(),
            want,
        });
    }
    Ok(())
}

/// A stored payload that decodes to more than the `want` bytes declared.
fn too_long(codec: Codec, want: u32) -> DecompressError {
    DecompressError::Length {
        codec,
        got: format!("more than {want}"),
        want,
    }
}

/// A stored payload the codec rejects.
fn corrupt(codec: Codec, error: impl std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt {
        codec,
        why: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(codec: Codec) -> Compression {
        Compression { codec, level: 1 }
    }

    #[test]
    fn round_trip_and_raw_when_it_does_not_shrink() {
        let text: Vec<u8> = b"pbio compresses text ".repeat(5000);
        let mut random = vec![0u8; 1 << 16];
        let mut x = 0x9e3779b97f4a7c15u64;
        for b in random.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for codec in [Codec::Zstd, Codec::Lz4] {
            let mut c = Compressor::new(setting(codec));
            let mut out = Vec::new();
            let n = c.compress(&text, &mut out).expect("text shrinks");
            assert!(n < text.len() / 10, "{codec:?}: {n}");
            let mut back = vec![0u8; text.len()];
            decompress(codec, &out[..n], &mut back).unwrap();
            assert_eq!(back, text);
            assert_eq!(c.compress(&random, &mut out), None, "{codec:?}");
            assert_eq!(c.compress(&[7], &mut out), None);
        }
    }

    #[test]
    fn a_bomb_or_a_short_payload_is_refused_without_writing_past_the_buffer() {
        let zeros = vec![0u8; 1 << 20];
        for codec in [Codec::Zstd, Codec::Lz4] {
            let mut out = Vec::new();
            let n = compress(setting(codec), &zeros, &mut out).unwrap();
            let stored = &out[..n];
            // The header says less than it expands to.
            let mut small = vec![0u8; 4096];
            let e = decompress(codec, stored, &mut small).unwrap_err();
            assert!(matches!(e, DecompressError::Length { .. }), "{codec:?} {e}");
            // Or more.
            let mut big = vec![0u8; zeros.len() + 1];
            let e = decompress(codec, stored, &mut big).unwrap_err();
            assert!(matches!(e, DecompressError::Length { .. }), "{codec:?} {e}");
            // Garbage.
            let mut back = vec![0u8; zeros.len()];
            assert!(decompress(codec, &[0xff; 64], &mut back).is_err());
            assert!(decompress(codec, &[], &mut back).is_err());
        }
    }
}
