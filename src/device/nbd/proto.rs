//! The NBD wire protocol, as pure encoders and decoders (no I/O), from the
//! protocol document (NetworkBlockDevice/nbd, doc/proto.md): the fixed
//! newstyle handshake, option haggling with NBD_OPT_GO, requests, and
//! simple and structured replies. Every decoder checks what a hostile or
//! broken server could get wrong (magic, lengths, offsets) and returns an
//! error that says what, never panics.

/// "NBDMAGIC": the server's first eight bytes.
pub const INIT_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle negotiation, and the prefix of every client option.
pub const OPTS_MAGIC: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply.
pub const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
pub const FLAG_NO_ZEROES: u16 = 2;

/// Options.
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_ABORT: u32 = 2;

/// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_INFO: u32 = 3;
const REP_FLAG_ERROR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;

/// NBD_OPT_GO information types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;

/// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;

/// Structured reply flags and chunk types.
pub const REPLY_FLAG_DONE: u16 = 1;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;

pub const REQUEST_BYTES: usize = 28;
pub const SIMPLE_REPLY_BYTES: usize = 16;
pub const STRUCTURED_REPLY_BYTES: usize = 20;
/// Option replies longer than this are refused (a hostile server).
pub const OPTION_REPLY_MAX: u32 = 64 << 10;
/// A structured chunk's own payload (everything but OFFSET_DATA's data)
/// longer than this is refused.
pub const CHUNK_META_MAX: u32 = 64 << 10;

/// Something the server sent that the protocol does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("bad {what} magic {got:#x} (expected {want:#x}): not an NBD server, or a broken one")]
    Magic {
        what: &'static str,
        got: u64,
        want: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ProtoError {
    ProtoError::Invalid(msg.into())
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The server's greeting (18 bytes): NBDMAGIC, IHAVEOPT, handshake flags.
pub fn decode_greeting(b: &[u8; 18]) -> Result<u16, ProtoError> {
    let magic = be64(b, 0);
    if magic != INIT_MAGIC {
        return Err(ProtoError::Magic {
            what: "greeting",
            got: magic,
            want: INIT_MAGIC,
        });
    }
    let opts = be64(b, 8);
    if opts != OPTS_MAGIC {
        return Err(invalid(format!(
            "the server speaks the old-style handshake (magic {opts:#x}), not fixed newstyle"
        )));
    }
    let flags = be16(b, 16);
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(invalid(
            "the server does not offer the fixed newstyle handshake",
        ));
    }
    Ok(flags)
}

/// A client option: IHAVEOPT, option, length, data.
pub fn encode_option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + data.len());
    v.extend_from_slice(&OPTS_MAGIC.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// NBD_OPT_GO's data: the export name and the information asked for.
pub fn go_data(export: &str, infos: &[u16]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + export.len() + 2 * infos.len());
    v.extend_from_slice(&(export.len() as u32).to_be_bytes());
    v.extend_from_slice(export.as_bytes());
    v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

/// An option reply's fixed part (20 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionReply {
    pub option: u32,
    pub reply: u32,
    pub length: u32,
}

impl OptionReply {
    pub fn is_error(&self) -> bool {
        self.reply & REP_FLAG_ERROR != 0
    }
}

pub fn decode_option_reply(b: &[u8; 20], sent: u32) -> Result<OptionReply, ProtoError> {
    let magic = be64(b, 0);
    if magic != REP_MAGIC {
        return Err(ProtoError::Magic {
            what: "option reply",
            got: magic,
            want: REP_MAGIC,
        });
    }
    let r = OptionReply {
        option: be32(b, 8),
        reply: be32(b, 12),
        length: be32(b, 16),
    };
    if r.option != sent {
        return Err(invalid(format!(
            "option reply for option {} to option {sent}",
            r.option
        )));
    }
    if r.length > OPTION_REPLY_MAX {
        return Err(invalid(format!(
            "option reply of {} bytes (at most {OPTION_REPLY_MAX})",
            r.length
        )));
    }
    Ok(r)
}

/// What an option error reply means, for the user.
pub fn option_error_text(reply: u32, message: &[u8]) -> String {
    let what = match reply {
        REP_ERR_UNSUP => "not supported by the server",
        REP_ERR_POLICY => "refused by the server's policy",
        REP_ERR_INVALID => "invalid",
        REP_ERR_TLS_REQD => "the server requires TLS (pbio does not speak TLS yet)",
        REP_ERR_UNKNOWN => "no such export",
        REP_ERR_SHUTDOWN => "the server is shutting down",
        _ => "refused",
    };
    // The server's words, escaped for the terminal.
    let message = crate::units::shown_name(message.trim_ascii());
    if message.is_empty() {
        format!("{what} (error {:#x})", reply)
    } else {
        format!("{what} (error {:#x}): {message}", reply)
    }
}

/// What NBD_OPT_GO told about the export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportInfo {
    pub size_bytes: u64,
    pub transmission_flags: u16,
    /// NBD_INFO_BLOCK_SIZE: (minimum, preferred, maximum payload); None if not sent.
    pub block_sizes: Option<(u32, u32, u32)>,
}

/// Fold one NBD_REP_INFO payload into `info`. Unknown information types
/// are ignored, as the protocol says.
pub fn apply_info(info: &mut ExportInfo, data: &[u8]) -> Result<bool, ProtoError> {
    if data.len() < 2 {
        return Err(invalid("NBD_REP_INFO shorter than its type"));
    }
    match be16(data, 0) {
        INFO_EXPORT => {
            if data.len() != 12 {
                return Err(invalid(format!(
                    "NBD_INFO_EXPORT of {} bytes (expected 12)",
                    data.len()
                )));
            }
            info.size_bytes = be64(data, 2);
            info.transmission_flags = be16(data, 10);
            Ok(true)
        }
        INFO_BLOCK_SIZE => {
            if data.len() != 14 {
                return Err(invalid(format!(
                    "NBD_INFO_BLOCK_SIZE of {} bytes (expected 14)",
                    data.len()
                )));
            }
            let (min, pref, max) = (be32(data, 2), be32(data, 6), be32(data, 10));
            if !min.is_power_of_two() || min > 65536 || !pref.is_power_of_two() || max < min {
                return Err(invalid(format!(
                    "NBD_INFO_BLOCK_SIZE minimum {min}, preferred {pref}, maximum {max} is not valid"
                )));
            }
            info.block_sizes = Some((min, pref, max));
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// A transmission request (28 bytes).
pub fn encode_request(
    out: &mut [u8; REQUEST_BYTES],
    flags: u16,
    command: u16,
    handle: u64,
    offset: u64,
    length: u32,
) {
    out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&command.to_be_bytes());
    out[8..16].copy_from_slice(&handle.to_be_bytes());
    out[16..24].copy_from_slice(&offset.to_be_bytes());
    out[24..28].copy_from_slice(&length.to_be_bytes());
}

/// The head of a reply: which kind, and (for a structured one) its chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyHead {
    /// 16 bytes: error (an NBD errno) and handle; a successful read's data follows.
    Simple { error: u32, handle: u64 },
    /// 20 bytes, then `length` bytes of chunk payload.
    Structured {
        flags: u16,
        kind: u16,
        handle: u64,
        length: u32,
    },
}

/// Bytes of the reply head starting with `magic` (the first four bytes).
pub fn reply_head_bytes(magic: u32) -> Result<usize, ProtoError> {
    match magic {
        SIMPLE_REPLY_MAGIC => Ok(SIMPLE_REPLY_BYTES),
        STRUCTURED_REPLY_MAGIC => Ok(STRUCTURED_REPLY_BYTES),
        got => Err(ProtoError::Magic {
            what: "reply",
            got: got as u64,
            want: SIMPLE_REPLY_MAGIC as u64,
        }),
    }
}

/// Decode a reply head from `b` (at least `reply_head_bytes` long).
pub fn decode_reply_head(b: &[u8], structured_allowed: bool) -> Result<ReplyHead, ProtoError> {
    let magic = be32(b, 0);
    match magic {
        SIMPLE_REPLY_MAGIC => Ok(ReplyHead::Simple {
            error: be32(b, 4),
            handle: be64(b, 8),
        }),
        STRUCTURED_REPLY_MAGIC if !structured_allowed => Err(invalid(
            "a structured reply although structured replies were not negotiated",
        )),
        STRUCTURED_REPLY_MAGIC => {
            let flags = be16(b, 4);
            let kind = be16(b, 6);
            let length = be32(b, 16);
            let meta_limit = match kind {
                REPLY_TYPE_OFFSET_DATA => u32::MAX,
                _ => CHUNK_META_MAX,
            };
            if length > meta_limit {
                return Err(invalid(format!(
                    "structured reply chunk type {kind} of {length} bytes"
                )));
            }
            Ok(ReplyHead::Structured {
                flags,
                kind,
                handle: be64(b, 8),
                length,
            })
        }
        got => Err(ProtoError::Magic {
            what: "reply",
            got: got as u64,
            want: SIMPLE_REPLY_MAGIC as u64,
        }),
    }
}

pub fn is_error_chunk(kind: u16) -> bool {
    kind & REPLY_TYPE_ERROR_BIT != 0
}

/// An error chunk's payload: (NBD errno, message).
pub fn decode_error_chunk(data: &[u8]) -> Result<(u32, String), ProtoError> {
    if data.len() < 6 {
        return Err(invalid(format!(
            "error chunk of {} bytes (at least 6)",
            data.len()
        )));
    }
    let error = be32(data, 0);
    let msg_len = be16(data, 4) as usize;
    if 6 + msg_len > data.len() {
        return Err(invalid(format!(
            "error chunk message of {msg_len} bytes in a chunk of {}",
            data.len()
        )));
    }
    if error == 0 {
        return Err(invalid("error chunk with error 0"));
    }
    Ok((error, crate::units::shown_name(&data[6..6 + msg_len])))
}

/// An OFFSET_HOLE chunk's payload: (offset, length).
pub fn decode_hole_chunk(data: &[u8]) -> Result<(u64, u32), ProtoError> {
    if data.len() != 12 {
        return Err(invalid(format!(
            "hole chunk of {} bytes (expected 12)",
            data.len()
        )));
    }
    Ok((be64(data, 0), be32(data, 8)))
}

/// The errno an NBD error code stands for (the protocol's values are Linux's).
pub fn errno_of(nbd_error: u32) -> i32 {
    match nbd_error {
        1 => libc::EPERM,
        5 => libc::EIO,
        12 => libc::ENOMEM,
        22 => libc::EINVAL,
        28 => libc::ENOSPC,
        75 => libc::EOVERFLOW,
        95 => libc::EOPNOTSUPP,
        108 => libc::ESHUTDOWN,
        // Unknown codes: treat as an I/O error, as the protocol advises.
        _ => libc::EIO,
    }
}

/// Check that a data or hole chunk at `[chunk_offset, chunk_offset + len)`
/// lies within the request `[req_offset, req_offset + req_len)`; returns
/// the chunk's offset within the request.
pub fn chunk_within(
    chunk_offset: u64,
    len: u64,
    req_offset: u64,
    req_len: u32,
) -> Result<usize, ProtoError> {
    let req_end = req_offset + req_len as u64;
    match chunk_offset.checked_add(len) {
        Some(end) if chunk_offset >= req_offset && end <= req_end => {
            Ok((chunk_offset - req_offset) as usize)
        }
        _ => Err(invalid(format!(
            "read reply chunk at offset {chunk_offset} ({len} bytes) outside the request at {req_offset} ({req_len} bytes)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn greeting() {
        let mut b = [0u8; 18];
        b[..8].copy_from_slice(&INIT_MAGIC.to_be_bytes());
        b[8..16].copy_from_slice(&OPTS_MAGIC.to_be_bytes());
        b[16..].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(decode_greeting(&b), Ok(3));
        b[17] = 2;
        assert!(decode_greeting(&b)
            .unwrap_err()
            .to_string()
            .contains("fixed newstyle"));
        b[0] = 0;
        assert!(matches!(decode_greeting(&b), Err(ProtoError::Magic { .. })));
    }

    #[test]
    fn request_layout() {
        let mut b = [0u8; REQUEST_BYTES];
        encode_request(&mut b, 1, CMD_WRITE, 0x0102_0304_0506_0708, 4096, 65536);
        assert_eq!(&b[..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(&b[4..8], &[0, 1, 0, 1]);
        assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(be64(&b, 16), 4096);
        assert_eq!(be32(&b, 24), 65536);
    }

    #[test]
    fn infos() {
        let mut info = ExportInfo::default();
        let mut d = vec![0, 0];
        d.extend_from_slice(&(1u64 << 30).to_be_bytes());
        d.extend_from_slice(&(TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH).to_be_bytes());
        assert_eq!(apply_info(&mut info, &d), Ok(true));
        assert_eq!(info.size_bytes, 1 << 30);
        let mut d = vec![0, 3];
        for v in [512u32, 4096, 32 << 20] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(apply_info(&mut info, &d), Ok(false));
        assert_eq!(info.block_sizes, Some((512, 4096, 32 << 20)));
        d[5] = 3; // minimum 515: not a power of two
        assert!(apply_info(&mut info, &d).is_err());
        assert!(apply_info(&mut info, &[0]).is_err());
        assert!(apply_info(&mut info, &[0, 0, 1]).is_err());
        assert_eq!(apply_info(&mut info, &[0, 9, 1, 2]), Ok(false));
    }

    #[test]
    fn reply_heads() {
        let mut b = [0u8; 20];
        b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&28u32.to_be_bytes());
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        assert_eq!(
            decode_reply_head(&b, false),
            Ok(ReplyHead::Simple {
                error: 28,
                handle: 7
            })
        );
        b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert!(decode_reply_head(&b, false).is_err());
        b[4..6].copy_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
        b[6..8].copy_from_slice(&REPLY_TYPE_ERROR_BIT.to_be_bytes());
        b[16..20].copy_from_slice(&(1u32 << 20).to_be_bytes());
        // An error chunk of 1 MiB: refused.
        assert!(decode_reply_head(&b, true).is_err());
        b[..4].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        assert!(matches!(
            decode_reply_head(&b, true),
            Err(ProtoError::Magic { .. })
        ));
        assert!(reply_head_bytes(0xdead_beef).is_err());
    }

    #[test]
    fn chunks() {
        assert!(decode_error_chunk(&[0, 0, 0, 5, 0, 3, b'b', b'a', b'd']).is_ok());
        assert!(decode_error_chunk(&[0, 0, 0, 5, 0, 9, b'b']).is_err());
        assert!(decode_error_chunk(&[0, 0, 0, 0, 0, 0]).is_err());
        assert_eq!(chunk_within(4096, 4096, 0, 8192), Ok(4096));
        assert!(chunk_within(4096, 8192, 0, 8192).is_err());
        assert!(chunk_within(0, 1, 4096, 8192).is_err());
        assert!(chunk_within(u64::MAX, 2, 0, 8192).is_err());
    }

    proptest! {
        /// No input makes a decoder panic.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), s in any::<bool>()) {
            let mut g = [0u8; 18];
            let n = bytes.len().min(18);
            g[..n].copy_from_slice(&bytes[..n]);
            let _ = decode_greeting(&g);
            let mut r = [0u8; 20];
            let n = bytes.len().min(20);
            r[..n].copy_from_slice(&bytes[..n]);
            let _ = decode_option_reply(&r, OPT_GO);
            let _ = decode_reply_head(&r, s);
            let mut info = ExportInfo::default();
            let _ = apply_info(&mut info, &bytes);
            let _ = decode_error_chunk(&bytes);
            let _ = decode_hole_chunk(&bytes);
        }

        /// A chunk accepted as within a request really is.
        #[test]
        fn chunk_bounds(co in any::<u64>(), len in 0u64..1 << 33, ro in 0u64..1 << 40, rl in any::<u32>()) {
            if let Ok(at) = chunk_within(co, len, ro, rl) {
                prop_assert!(co >= ro);
                prop_assert_eq!(at as u64, co - ro);
                prop_assert!(at as u64 + len <= rl as u64);
            }
        }
    }
}
