//! SCSI Medium Changer commands (SMC-3), pure: the command descriptor
//! blocks pbio sends to a library and the parsers of what it answers. No
//! I/O here (`sg.rs` moves the bytes); every parser takes any bytes and
//! returns a value or an `SmcError`, never panics (`proptests` below).
//!
//! Commands: INQUIRY (12h), INITIALIZE ELEMENT STATUS (07h), MODE SENSE(6)
//! of the element address assignment page (1Dh), READ ELEMENT STATUS (B8h)
//! with VOLTAG (barcodes) and DVCID (drive identifiers), MOVE MEDIUM (A5h).
//!
//! Layouts follow SMC-3 (T10/1730-D) sections 6.5, 6.10, 7.3.3 and 6.11.2;
//! checked against how two free implementations read them: Proxmox Backup
//! Server's `pbs-tape/src/sg_pt_changer.rs` (one READ ELEMENT STATUS per
//! element type; DVCID asked for separately, without VOLTAG, because some
//! changers refuse both at once; identifier code set 2 type 0 = serial only
//! (Quantum Superloader 3), type 1 = T10 vendor 8 + product 16 + serial 10)
//! and mhvtl's `usr/vtllibrary.c` / `smc.c` (the emulator's default element
//! addresses: drives from 0x0001, picker 0x0100, MAP 0x0200, storage 0x0400).

/// What went wrong reading a changer's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmcError {
    #[error("{what}: {need} bytes needed, {have} returned")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: String },
}

fn invalid(what: &'static str, why: impl Into<String>) -> SmcError {
    SmcError::Invalid {
        what,
        why: why.into(),
    }
}

/// Bytes `at..at + len` of `data`, or the error saying how many were missing.
fn take<'a>(
    data: &'a [u8],
    at: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], SmcError> {
    let end = at
        .checked_add(len)
        .ok_or_else(|| invalid(what, "length overflows"))?;
    data.get(at..end).ok_or(SmcError::Truncated {
        what,
        need: end,
        have: data.len(),
    })
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be24(b: &[u8]) -> usize {
    (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize
}

/// Operation codes.
pub const OP_INQUIRY: u8 = 0x12;
pub const OP_INITIALIZE_ELEMENT_STATUS: u8 = 0x07;
pub const OP_MODE_SENSE_6: u8 = 0x1A;
pub const OP_READ_ELEMENT_STATUS: u8 = 0xB8;
pub const OP_MOVE_MEDIUM: u8 = 0xA5;
/// Element address assignment mode page.
pub const PAGE_ELEMENT_ADDRESS_ASSIGNMENT: u8 = 0x1D;
/// SPC peripheral device type of a medium changer.
pub const PERIPHERAL_MEDIUM_CHANGER: u8 = 0x08;
/// Length of a primary or alternate volume tag field.
pub const VOLUME_TAG_BYTES: usize = 36;
/// Bytes of the element status data header and of an element status page header.
pub const STATUS_HEADER_BYTES: usize = 8;
/// The fixed part of every element descriptor (address .. source address).
pub const DESCRIPTOR_FIXED_BYTES: usize = 12;

/// Element type codes (SMC-3 table 52).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementType {
    /// The robot (picker, gripper).
    MediumTransport,
    /// A slot.
    Storage,
    /// A mail slot (import/export element).
    ImportExport,
    /// A drive.
    DataTransfer,
}

impl ElementType {
    pub fn code(self) -> u8 {
        match self {
            ElementType::MediumTransport => 1,
            ElementType::Storage => 2,
            ElementType::ImportExport => 3,
            ElementType::DataTransfer => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<ElementType> {
        Some(match code {
            1 => ElementType::MediumTransport,
            2 => ElementType::Storage,
            3 => ElementType::ImportExport,
            4 => ElementType::DataTransfer,
            _ => return None,
        })
    }
}

/// INQUIRY, standard data (SPC-4 6.6).
pub fn inquiry_cdb(allocation_bytes: u8) -> [u8; 6] {
    [OP_INQUIRY, 0, 0, 0, allocation_bytes, 0]
}

/// INITIALIZE ELEMENT STATUS: the library rescans its slots (barcodes).
pub fn initialize_element_status_cdb() -> [u8; 6] {
    [OP_INITIALIZE_ELEMENT_STATUS, 0, 0, 0, 0, 0]
}

/// MODE SENSE(6) of the element address assignment page, without block
/// descriptors (DBD), current values.
pub fn mode_sense_element_addresses_cdb(allocation_bytes: u8) -> [u8; 6] {
    [
        OP_MODE_SENSE_6,
        0x08, // DBD
        PAGE_ELEMENT_ADDRESS_ASSIGNMENT,
        0,
        allocation_bytes,
        0,
    ]
}

/// READ ELEMENT STATUS (SMC-3 6.10): `count` elements of `kind` (None:
/// all types) from address `start`; `volume_tags` asks for barcodes
/// (VOLTAG), `device_ids` for the drives' identifiers (DVCID).
pub fn read_element_status_cdb(
    kind: Option<ElementType>,
    start: u16,
    count: u16,
    volume_tags: bool,
    device_ids: bool,
    allocation_bytes: u32,
) -> [u8; 12] {
    assert!(allocation_bytes < 1 << 24, "allocation length is 24 bits");
    let type_code = kind.map_or(0, ElementType::code);
    let alloc = allocation_bytes.to_be_bytes();
    let [s0, s1] = start.to_be_bytes();
    let [c0, c1] = count.to_be_bytes();
    [
        OP_READ_ELEMENT_STATUS,
        (volume_tags as u8) << 4 | type_code,
        s0,
        s1,
        c0,
        c1,
        device_ids as u8, // CURDATA=0, DVCID
        alloc[1],
        alloc[2],
        alloc[3],
        0,
        0,
    ]
}

/// MOVE MEDIUM (SMC-3 6.7): the robot at `transport` moves the cartridge
/// at `source` to `destination` (no INVERT).
pub fn move_medium_cdb(transport: u16, source: u16, destination: u16) -> [u8; 12] {
    let [t0, t1] = transport.to_be_bytes();
    let [s0, s1] = source.to_be_bytes();
    let [d0, d1] = destination.to_be_bytes();
    [OP_MOVE_MEDIUM, 0, t0, t1, s0, s1, d0, d1, 0, 0, 0, 0]
}

/// Fixed-width ASCII as SCSI pads it: trailing spaces and NULs dropped;
/// bytes that are not printable ASCII shown as '?'.
pub fn ascii_field(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    bytes[..end]
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// The standard INQUIRY data pbio looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inquiry {
    pub peripheral_type: u8,
    pub vendor: String,
    pub product: String,
    pub revision: String,
}

pub fn parse_inquiry(data: &[u8]) -> Result<Inquiry, SmcError> {
    let d = take(data, 0, 36, "INQUIRY data")?;
    Ok(Inquiry {
        peripheral_type: d[0] & 0x1f,
        vendor: ascii_field(&d[8..16]),
        product: ascii_field(&d[16..32]),
        revision: ascii_field(&d[32..36]),
    })
}

/// A run of element addresses: `count` elements from `first`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressRange {
    pub first: u16,
    pub count: u16,
}

impl AddressRange {
    pub fn contains(&self, address: u16) -> bool {
        address >= self.first && ((address - self.first) as u32) < self.count as u32
    }
}

/// The element address assignment page: where each kind of element lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressAssignment {
    pub transport: AddressRange,
    pub storage: AddressRange,
    pub import_export: AddressRange,
    pub data_transfer: AddressRange,
}

impl AddressAssignment {
    /// Every element the library has.
    pub fn element_count(&self) -> u32 {
        [
            self.transport,
            self.storage,
            self.import_export,
            self.data_transfer,
        ]
        .iter()
        .map(|r| r.count as u32)
        .sum()
    }
}

/// The MODE SENSE(6) answer for page 1Dh: a 4-byte mode parameter header,
/// block descriptors (skipped), then the page (SMC-3 7.3.3).
pub fn parse_address_assignment(data: &[u8]) -> Result<AddressAssignment, SmcError> {
    const WHAT: &str = "element address assignment page";
    let header = take(data, 0, 4, WHAT)?;
    // The mode data length does not count itself.
    let total = header[0] as usize + 1;
    let data = &data[..total.min(data.len())];
    let page_at = 4 + header[3] as usize;
    let head = take(data, page_at, 2, WHAT)?;
    if head[0] & 0x3f != PAGE_ELEMENT_ADDRESS_ASSIGNMENT {
        return Err(invalid(WHAT, format!("page code {:#04x}", head[0] & 0x3f)));
    }
    if (head[1] as usize) < 16 {
        return Err(invalid(
            WHAT,
            format!("page length {} (at least 16)", head[1]),
        ));
    }
    let p = take(data, page_at + 2, 16, WHAT)?;
    let range = |at: usize| AddressRange {
        first: be16(&p[at..]),
        count: be16(&p[at + 2..]),
    };
    Ok(AddressAssignment {
        transport: range(0),
        storage: range(4),
        import_export: range(8),
        data_transfer: range(12),
    })
}

/// A drive's identifier from the DVCID part of its descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentifier {
    /// 1 binary, 2 ASCII (SPC-4 code set).
    pub code_set: u8,
    /// 0 vendor specific (a serial number), 1 T10 vendor id, ...
    pub id_type: u8,
    pub bytes: Vec<u8>,
}

impl DeviceIdentifier {
    /// The drive's serial number where the identifier's type says where it
    /// is: the whole of an ASCII vendor-specific identifier, or what
    /// follows vendor (8) and product (16) in a T10 vendor id.
    pub fn serial(&self) -> Option<String> {
        let s = match (self.code_set, self.id_type) {
            (2, 0) => ascii_field(&self.bytes),
            (2, 1) if self.bytes.len() > 24 => ascii_field(&self.bytes[24..]),
            _ => return None,
        };
        (!s.is_empty()).then_some(s)
    }

    /// The identifier as text (vendor, product and serial for a T10 id).
    pub fn text(&self) -> String {
        match (self.code_set, self.id_type) {
            (2, 1) if self.bytes.len() > 24 => format!(
                "{} {} {}",
                ascii_field(&self.bytes[..8]),
                ascii_field(&self.bytes[8..24]),
                ascii_field(&self.bytes[24..])
            ),
            (2, _) => ascii_field(&self.bytes),
            _ => self.bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// One element as READ ELEMENT STATUS describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub kind: ElementType,
    pub address: u16,
    /// Holds a cartridge.
    pub full: bool,
    /// In an abnormal state (EXCEPT); `asc`/`ascq` say which.
    pub except: bool,
    pub asc: u8,
    pub ascq: u8,
    /// Where the cartridge came from (SVALID).
    pub source: Option<u16>,
    /// The cartridge's barcode (primary volume tag), when full and tagged.
    pub volume_tag: Option<String>,
    /// A drive's identifier (DVCID asked for and reported).
    pub identifier: Option<DeviceIdentifier>,
}

/// A parsed READ ELEMENT STATUS answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementReport {
    pub first_address: u16,
    /// Elements the library has in the range asked (may be more than were returned).
    pub elements_available: u16,
    pub elements: Vec<Element>,
}

/// Parse the answer to READ ELEMENT STATUS (SMC-3 6.11): the element
/// status data header, then pages of one element type each, each a header
/// and descriptors of one length. `device_ids`: DVCID was asked for, so a
/// descriptor carries an identification descriptor after its volume tags.
///
/// A report longer than what was returned (the allocation length cut it)
/// is `Truncated`: ask again with more room. Descriptors that overrun
/// their page, pages that overrun the report, unknown element types and
/// descriptors too short for the fields their page announces are `Invalid`.
pub fn parse_element_status(data: &[u8], device_ids: bool) -> Result<ElementReport, SmcError> {
    parse_status(data, device_ids, false)
}

/// Parse an answer to READ ELEMENT STATUS that the device sent short of
/// its own byte counts, with room to spare in the allocation length (so
/// asking again with more room cannot help). tgt's changer (usr/smc.c)
/// sends 8 bytes fewer than its element status data header counts (it
/// leaves the page header out of the length it sends): the last
/// descriptor of every answer arrives cut, and with DVCID that is the
/// last drive's serial number, of which 2 characters arrive. mtx reads
/// such answers into a zeroed buffer; here the whole descriptors read as
/// `parse_element_status` reads them, and the cut one keeps what arrived
/// whole: its address, flags, source, and its barcode when all 32 bytes
/// of it did, an identifier only when all of it did (a serial cut short
/// could match another drive). A descriptor cut inside its first 12
/// bytes is left out (the caller asks again from that address).
pub fn parse_element_status_short(
    data: &[u8],
    device_ids: bool,
) -> Result<ElementReport, SmcError> {
    parse_status(data, device_ids, true)
}

/// `data[at..at + len]`, or with `short` what of it there is.
fn take_short<'a>(
    data: &'a [u8],
    at: usize,
    len: usize,
    what: &'static str,
    short: bool,
) -> Result<&'a [u8], SmcError> {
    match take(data, at, len, what) {
        Err(SmcError::Truncated { .. }) if short && at <= data.len() => Ok(&data[at..]),
        r => r,
    }
}

fn parse_status(data: &[u8], device_ids: bool, short: bool) -> Result<ElementReport, SmcError> {
    const WHAT: &str = "element status data";
    let header = take(data, 0, STATUS_HEADER_BYTES, WHAT)?;
    let report_bytes = be24(&header[5..8]);
    let report = take_short(data, STATUS_HEADER_BYTES, report_bytes, WHAT, short)?;
    let mut elements = Vec::new();
    let mut at = 0usize;
    while at < report.len() {
        const PAGE: &str = "element status page";
        let ph = take(report, at, STATUS_HEADER_BYTES, PAGE)?;
        let kind = ElementType::from_code(ph[0] & 0x0f)
            .ok_or_else(|| invalid(PAGE, format!("element type code {}", ph[0] & 0x0f)))?;
        let primary_tag = ph[1] & 0x80 != 0;
        let alternate_tag = ph[1] & 0x40 != 0;
        let descriptor_bytes = be16(&ph[2..4]) as usize;
        let page_bytes = be24(&ph[5..8]);
        let tags_end = DESCRIPTOR_FIXED_BYTES
            + VOLUME_TAG_BYTES * (primary_tag as usize + alternate_tag as usize);
        if descriptor_bytes < tags_end {
            return Err(invalid(
                PAGE,
                format!("descriptor length {descriptor_bytes} < {tags_end} for its fields"),
            ));
        }
        let page = take_short(report, at + STATUS_HEADER_BYTES, page_bytes, PAGE, short)?;
        if !page_bytes.is_multiple_of(descriptor_bytes) {
            return Err(invalid(
                PAGE,
                format!("{page_bytes} bytes of descriptors of {descriptor_bytes} bytes each"),
            ));
        }
        // A part descriptor only when `short` let the page arrive cut.
        for d in page.chunks(descriptor_bytes) {
            if d.len() < DESCRIPTOR_FIXED_BYTES {
                break;
            }
            elements.push(parse_descriptor(
                kind,
                d,
                primary_tag,
                alternate_tag,
                device_ids,
                d.len() < descriptor_bytes,
            )?);
        }
        at += STATUS_HEADER_BYTES + page_bytes;
    }
    Ok(ElementReport {
        first_address: be16(&header[0..2]),
        elements_available: be16(&header[2..4]),
        elements,
    })
}

/// One element descriptor, `d.len()` at least the fixed part and the
/// tags, unless `cut` (the device sent it short: what did not arrive
/// whole is absent).
fn parse_descriptor(
    kind: ElementType,
    d: &[u8],
    primary_tag: bool,
    alternate_tag: bool,
    device_ids: bool,
    cut: bool,
) -> Result<Element, SmcError> {
    const WHAT: &str = "element descriptor";
    let full = d[2] & 0x01 != 0;
    let source = (d[9] & 0x80 != 0).then(|| be16(&d[10..12]));
    let mut at = DESCRIPTOR_FIXED_BYTES;
    let mut volume_tag = None;
    if primary_tag {
        if let Some(field) = d.get(at..at + 32) {
            let tag = ascii_field(field);
            if full && !tag.is_empty() {
                volume_tag = Some(tag);
            }
        }
        at += VOLUME_TAG_BYTES;
    }
    if alternate_tag {
        at += VOLUME_TAG_BYTES;
    }
    let mut identifier = None;
    // With DVCID every descriptor carries an identification descriptor
    // (length 0 for elements that are not drives); a descriptor that ends
    // before it has none.
    if device_ids && d.len() >= at + 4 {
        let id_bytes = d[at + 3] as usize;
        let bytes = match take(d, at + 4, id_bytes, WHAT) {
            Err(SmcError::Truncated { .. }) if cut => &[][..],
            r => r?,
        };
        if !bytes.is_empty() {
            identifier = Some(DeviceIdentifier {
                code_set: d[at] & 0x0f,
                id_type: d[at + 1] & 0x0f,
                bytes: bytes.to_vec(),
            });
        }
    }
    Ok(Element {
        kind,
        address: be16(&d[0..2]),
        full,
        except: d[2] & 0x04 != 0,
        asc: d[4],
        ascq: d[5],
        source,
        volume_tag,
        identifier,
    })
}

/// Decoded sense data: fixed (70h/71h) or descriptor (72h/73h) format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

pub fn parse_sense(data: &[u8]) -> Option<Sense> {
    match data.first()? & 0x7f {
        0x70 | 0x71 if data.len() >= 14 => Some(Sense {
            key: data[2] & 0x0f,
            asc: data[12],
            ascq: data[13],
        }),
        0x70 | 0x71 if data.len() >= 3 => Some(Sense {
            key: data[2] & 0x0f,
            asc: 0,
            ascq: 0,
        }),
        0x72 | 0x73 if data.len() >= 4 => Some(Sense {
            key: data[1] & 0x0f,
            asc: data[2],
            ascq: data[3],
        }),
        _ => None,
    }
}

impl Sense {
    /// UNIT ATTENTION: the device reports an event (power on or reset
    /// 29h, medium may have changed 28h, parameters changed 2Ah) instead
    /// of doing the command, once per event and initiator; the command
    /// itself is to be sent again. The sg driver does not resend it (sd
    /// and st do, for their own commands): the first command pbio sends
    /// to a changer after its reset (tgt's, at every login) gets 29h/00h.
    pub fn send_again(&self) -> bool {
        self.key == 0x6
    }

    pub fn key_name(&self) -> &'static str {
        match self.key {
            0x0 => "NO SENSE",
            0x1 => "RECOVERED ERROR",
            0x2 => "NOT READY",
            0x3 => "MEDIUM ERROR",
            0x4 => "HARDWARE ERROR",
            0x5 => "ILLEGAL REQUEST",
            0x6 => "UNIT ATTENTION",
            0x7 => "DATA PROTECT",
            0xb => "ABORTED COMMAND",
            _ => "sense key",
        }
    }

    /// What the changer-relevant additional sense codes mean (SPC-4 annex).
    pub fn meaning(&self) -> Option<&'static str> {
        Some(match (self.asc, self.ascq) {
            (0x04, 0x01) => "becoming ready",
            (0x04, 0x03) => "manual intervention required",
            (0x28, 0x00) => "not ready to ready change, medium may have changed",
            (0x29, _) => "power on or reset",
            (0x3a, _) => "medium not present",
            (0x3b, 0x0d) => "medium destination element full",
            (0x3b, 0x0e) => "medium source element empty",
            (0x3b, 0x11) => "medium magazine not accessible",
            (0x3b, 0x12) => "medium magazine removed",
            (0x20, 0x00) => "invalid command operation code",
            (0x21, 0x01) => "invalid element address",
            (0x24, 0x00) => "invalid field in CDB",
            (0x53, 0x02) => "medium removal prevented",
            (0x83, 0x02) => "no place to put the medium",
            _ => return None,
        })
    }
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (key {:#x}), ASC/ASCQ {:02x}h/{:02x}h",
            self.key_name(),
            self.key,
            self.asc,
            self.ascq
        )?;
        if let Some(m) = self.meaning() {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
