//! The SMC layer against answers of three libraries with different element
//! address layouts (fixtures/*.hex, written byte by byte after SMC-3 by
//! fixtures/make.py, independently of this parser), a fourth recorded from
//! a real target (fixtures/tgt-*.hex: tgt 1.0.85's virtual library over
//! iSCSI, as hw-tests/vm/vtl.sh sets it up), hostile answers, and random
//! bytes.

use super::*;
use proptest::prelude::*;

/// Bytes of a fixture hex dump ("0000: 00 01 ..." lines).
fn hex(text: &str) -> Vec<u8> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .flat_map(|(_, bytes)| bytes.split_whitespace())
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

macro_rules! fixture {
    ($name:literal) => {
        hex(include_str!(concat!("../fixtures/", $name, ".hex")))
    };
}

fn of(report: &ElementReport, kind: ElementType) -> Vec<&Element> {
    report.elements.iter().filter(|e| e.kind == kind).collect()
}

#[test]
fn command_blocks() {
    assert_eq!(inquiry_cdb(96), [0x12, 0, 0, 0, 96, 0]);
    assert_eq!(initialize_element_status_cdb(), [0x07, 0, 0, 0, 0, 0]);
    assert_eq!(
        mode_sense_element_addresses_cdb(255),
        [0x1a, 0x08, 0x1d, 0, 255, 0]
    );
    // All types from 0, 0xffff elements, barcodes and drive identifiers, 64 KiB.
    assert_eq!(
        read_element_status_cdb(None, 0, 0xffff, true, true, 0x01_0000),
        [0xb8, 0x10, 0, 0, 0xff, 0xff, 0x01, 0x01, 0x00, 0x00, 0, 0]
    );
    assert_eq!(
        read_element_status_cdb(
            Some(ElementType::DataTransfer),
            0x01f4,
            2,
            false,
            true,
            0xffff
        ),
        [0xb8, 0x04, 0x01, 0xf4, 0, 2, 0x01, 0x00, 0xff, 0xff, 0, 0]
    );
    assert_eq!(
        read_element_status_cdb(Some(ElementType::Storage), 0x1000, 8, true, false, 4096),
        [0xb8, 0x12, 0x10, 0x00, 0, 8, 0, 0x00, 0x10, 0x00, 0, 0]
    );
    // Robot 1 moves slot 0x1002 to drive 0x0100.
    assert_eq!(
        move_medium_cdb(0x0001, 0x1002, 0x0100),
        [0xa5, 0, 0x00, 0x01, 0x10, 0x02, 0x01, 0x00, 0, 0, 0, 0]
    );
}

#[test]
fn ts3100_layout_one_query_with_barcodes_and_drive_ids() {
    let a = parse_address_assignment(&fixture!("ts3100-mode")).unwrap();
    assert_eq!(a.transport, AddressRange { first: 1, count: 1 });
    assert_eq!(
        a.import_export,
        AddressRange {
            first: 0x10,
            count: 1
        }
    );
    assert_eq!(
        a.data_transfer,
        AddressRange {
            first: 0x100,
            count: 2
        }
    );
    assert_eq!(
        a.storage,
        AddressRange {
            first: 0x1000,
            count: 8
        }
    );
    assert_eq!(a.element_count(), 12);

    let r = parse_element_status(&fixture!("ts3100-status"), true).unwrap();
    assert_eq!((r.first_address, r.elements_available), (1, 12));
    assert_eq!(r.elements.len(), 12);
    let drives = of(&r, ElementType::DataTransfer);
    assert_eq!(drives.len(), 2);
    assert_eq!(drives[0].address, 0x100);
    assert!(drives[0].full);
    assert_eq!(drives[0].source, Some(0x1002));
    assert_eq!(drives[0].volume_tag.as_deref(), Some("A00003L6"));
    let id = drives[0].identifier.as_ref().unwrap();
    assert_eq!(id.serial().as_deref(), Some("1013000001"));
    assert_eq!(id.text(), "IBM ULT3580-HH6 1013000001");
    assert!(!drives[1].full && drives[1].volume_tag.is_none() && drives[1].source.is_none());
    assert_eq!(
        drives[1].identifier.as_ref().unwrap().serial().as_deref(),
        Some("1013000002")
    );
    let slots = of(&r, ElementType::Storage);
    let tags: Vec<_> = slots
        .iter()
        .map(|s| (s.address, s.volume_tag.as_deref()))
        .collect();
    assert_eq!(
        tags,
        [
            (0x1000, Some("A00001L6")),
            (0x1001, Some("A00002L6")),
            (0x1002, None),
            (0x1003, Some("A00004L6")),
            (0x1004, None),
            (0x1005, None),
            (0x1006, None),
            (0x1007, Some("CLN001L1")),
        ]
    );
    assert!(slots.iter().all(|s| s.identifier.is_none()));
    assert_eq!(of(&r, ElementType::ImportExport)[0].address, 0x10);
    assert_eq!(of(&r, ElementType::MediumTransport)[0].address, 1);
    // Every element lies in the range the mode page gave its type.
    for e in &r.elements {
        let range = match e.kind {
            ElementType::MediumTransport => a.transport,
            ElementType::Storage => a.storage,
            ElementType::ImportExport => a.import_export,
            ElementType::DataTransfer => a.data_transfer,
        };
        assert!(range.contains(e.address), "{e:?}");
    }
}

#[test]
fn quantum_layout_queries_per_type_with_padding_and_serial_only_ids() {
    let a = parse_address_assignment(&fixture!("quantum-mode")).unwrap();
    assert_eq!(
        a.data_transfer,
        AddressRange {
            first: 500,
            count: 2
        }
    );
    assert_eq!(
        a.storage,
        AddressRange {
            first: 1000,
            count: 12
        }
    );
    assert_eq!(a.import_export.count, 0);

    let s = parse_element_status(&fixture!("quantum-storage"), false).unwrap();
    assert_eq!(s.elements.len(), 12);
    let full: Vec<_> = s
        .elements
        .iter()
        .filter(|e| e.full)
        .map(|e| (e.address, e.volume_tag.clone()))
        .collect();
    assert_eq!(
        full,
        [
            (1000, Some("Q00001L7".into())),
            (1001, Some("Q00002L7".into())),
            (1004, Some("Q00005L7".into())),
            // Full without a readable barcode.
            (1011, None),
        ]
    );
    let odd = &s.elements[11];
    assert!(odd.except);
    assert_eq!((odd.asc, odd.ascq), (0x83, 0x02));

    let d = parse_element_status(&fixture!("quantum-drives"), true).unwrap();
    let serials: Vec<_> = d
        .elements
        .iter()
        .map(|e| {
            (
                e.address,
                e.source,
                e.identifier.as_ref().and_then(DeviceIdentifier::serial),
            )
        })
        .collect();
    assert_eq!(
        serials,
        [
            (500, Some(1002), Some("HU1234ABCD".into())),
            (501, Some(1003), Some("HU1234ABCE".into())),
        ]
    );
    // Asked without DVCID, the same bytes are vendor specific: no identifier.
    let plain = parse_element_status(&fixture!("quantum-drives"), false).unwrap();
    assert!(plain.elements.iter().all(|e| e.identifier.is_none()));

    // Cut by the allocation length: ask again with more room.
    let e = parse_element_status(&fixture!("quantum-storage-cut"), false).unwrap_err();
    assert!(matches!(e, SmcError::Truncated { .. }), "{e}");
}

#[test]
fn mhvtl_layout_drives_first() {
    let a = parse_address_assignment(&fixture!("mhvtl-mode")).unwrap();
    assert_eq!(a.data_transfer, AddressRange { first: 1, count: 2 });
    assert_eq!(
        a.transport,
        AddressRange {
            first: 0x100,
            count: 1
        }
    );
    assert_eq!(
        a.import_export,
        AddressRange {
            first: 0x200,
            count: 4
        }
    );
    assert_eq!(
        a.storage,
        AddressRange {
            first: 0x400,
            count: 10
        }
    );
    let r = parse_element_status(&fixture!("mhvtl-status"), false).unwrap();
    assert_eq!(r.elements.len(), 17);
    assert_eq!(r.elements[0].kind, ElementType::DataTransfer);
    assert_eq!(r.elements[0].source, Some(0x402));
    assert_eq!(r.elements[0].volume_tag.as_deref(), Some("E01003L8"));
    let map = of(&r, ElementType::ImportExport);
    assert_eq!(map.len(), 4);
    assert_eq!(map[0].volume_tag.as_deref(), Some("CLN101L8"));
    let full: Vec<_> = of(&r, ElementType::Storage)
        .iter()
        .filter(|e| e.full)
        .map(|e| e.address)
        .collect();
    assert_eq!(full, [0x400, 0x401, 0x405]);
}

/// tgt's virtual library (usr/smc.c), recorded over iSCSI with slot 1000's
/// cartridge in drive 1 (hw-tests/vm/vtl.sh: drives 1-3, the third without
/// a LUN, robot 4, slots 1000-1005). Every answer arrives 8 bytes short
/// of its own byte count: the last descriptor is cut.
#[test]
fn tgt_answers_arrive_cut_and_read_whole_but_the_cut_fields() {
    let a = parse_address_assignment(&fixture!("tgt-mode")).unwrap();
    assert_eq!(a.data_transfer, AddressRange { first: 1, count: 3 });
    assert_eq!(a.transport, AddressRange { first: 4, count: 1 });
    assert_eq!(
        a.storage,
        AddressRange {
            first: 1000,
            count: 6
        }
    );
    assert_eq!(a.import_export.count, 0);

    // The strict parser sees the cut: 328 bytes counted, 320 sent.
    let storage = fixture!("tgt-storage");
    assert_eq!(storage.len(), 320);
    let e = parse_element_status(&storage, false).unwrap_err();
    assert_eq!(
        e,
        SmcError::Truncated {
            what: "element status data",
            need: 328,
            have: 320
        }
    );
    let s = parse_element_status_short(&storage, false).unwrap();
    let slots: Vec<_> = s
        .elements
        .iter()
        .map(|e| (e.address, e.full, e.volume_tag.clone()))
        .collect();
    let tag = |n: u32| Some(format!("PB{n:04}L6"));
    assert_eq!(
        slots,
        [
            (1000, false, None),
            (1001, true, tag(2)),
            (1002, true, tag(3)),
            (1003, true, tag(4)),
            (1004, true, tag(5)),
            // Cut: its 32-byte barcode arrived, the 4 bytes after it did not.
            (1005, true, tag(6)),
        ]
    );

    let d = parse_element_status_short(&fixture!("tgt-drives"), false).unwrap();
    let drives: Vec<_> = d
        .elements
        .iter()
        .map(|e| (e.address, e.full, e.source, e.volume_tag.clone()))
        .collect();
    assert_eq!(
        drives,
        [
            (1, true, Some(1000), tag(1)),
            (2, false, None, None),
            (3, false, None, None),
        ]
    );
    // The drive without a LUN is "initializing required" (04h/02h), not EXCEPT.
    assert_eq!((d.elements[2].asc, d.elements[2].ascq), (0x04, 0x02));

    // DVCID: T10 vendor identification, serial "beaf" + target + LUN.
    let ids = fixture!("tgt-drives-dvcid");
    assert!(parse_element_status(&ids, true).is_err());
    let d = parse_element_status_short(&ids, true).unwrap();
    let serials: Vec<_> = d
        .elements
        .iter()
        .map(|e| {
            (
                e.address,
                e.identifier.as_ref().and_then(DeviceIdentifier::serial),
            )
        })
        .collect();
    assert_eq!(
        serials,
        [
            (1, Some("beaf11".into())),
            (2, Some("beaf12".into())),
            (3, None)
        ]
    );
    assert_eq!(
        d.elements[0].identifier.as_ref().unwrap().text(),
        "IET VIRTUAL-TAPE beaf11"
    );
    // Without the third element, drive 2 is the cut one: its serial
    // arrives as "be", which must not become a serial at all.
    let mut two = ids[..8 + 8 + 2 * 50 - 8].to_vec();
    two[2..4].copy_from_slice(&2u16.to_be_bytes());
    two[5..8].copy_from_slice(&[0, 0, 8 + 2 * 50]);
    two[13..16].copy_from_slice(&[0, 0, 2 * 50]);
    let d = parse_element_status_short(&two, true).unwrap();
    assert_eq!(d.elements.len(), 2);
    assert!(d.elements[0].identifier.is_some());
    assert_eq!(d.elements[1].address, 2);
    assert_eq!(d.elements[1].identifier, None);

    // A cut inside a descriptor's first 12 bytes: left out.
    let d = parse_element_status_short(&storage[..storage.len() - 40], false).unwrap();
    assert_eq!(d.elements.len(), 5);
    // Whole answers read the same either way.
    let whole = fixture!("mhvtl-status");
    assert_eq!(
        parse_element_status_short(&whole, false).unwrap(),
        parse_element_status(&whole, false).unwrap()
    );
}

/// A report with one storage page of `descriptors` descriptors of `len` bytes.
fn storage_report(len: usize, descriptors: usize, flags: u8) -> Vec<u8> {
    let page = len * descriptors;
    let mut r = vec![0x10, 0x00, 0, descriptors as u8, 0];
    r.extend_from_slice(&((8 + page) as u32).to_be_bytes()[1..]);
    r.extend_from_slice(&[2, flags]);
    r.extend_from_slice(&(len as u16).to_be_bytes());
    r.push(0);
    r.extend_from_slice(&(page as u32).to_be_bytes()[1..]);
    for i in 0..descriptors {
        let mut d = vec![0u8; len];
        d[0..2].copy_from_slice(&(0x1000 + i as u16).to_be_bytes());
        r.extend_from_slice(&d);
    }
    r
}

#[test]
fn hostile_answers_are_errors() {
    assert!(parse_element_status(&storage_report(48, 3, 0x80), false).is_ok());
    // Every truncation of a valid answer: an error (never a panic, never a
    // shorter list taken for the whole).
    for fixture in [fixture!("ts3100-status"), fixture!("mhvtl-status")] {
        for n in 0..fixture.len() {
            assert!(
                parse_element_status(&fixture[..n], true).is_err(),
                "cut at {n}"
            );
        }
    }
    // A descriptor length too short for the volume tag the page announces.
    let e = parse_element_status(&storage_report(40, 2, 0x80), false).unwrap_err();
    assert!(e.to_string().contains("descriptor length 40"), "{e}");
    // Page byte count not a multiple of the descriptor length.
    let mut r = storage_report(48, 2, 0x80);
    r[11] = 50; // descriptor length 50 over 96 bytes
    assert!(parse_element_status(&r, false).is_err());
    // Descriptor length 0.
    let mut r = storage_report(48, 2, 0);
    r[10..12].copy_from_slice(&[0, 0]);
    assert!(parse_element_status(&r, false).is_err());
    // Page byte count overrunning the report.
    let mut r = storage_report(48, 2, 0x80);
    r[15] += 48;
    assert!(matches!(
        parse_element_status(&r, false),
        Err(SmcError::Truncated { .. })
    ));
    // Unknown element type.
    let mut r = storage_report(48, 1, 0);
    r[8] = 9;
    assert!(parse_element_status(&r, false).is_err());
    // An identifier length overrunning its descriptor (DVCID).
    let mut r = storage_report(16, 1, 0);
    r[8 + 8 + 12 + 3] = 200;
    let e = parse_element_status(&r, true).unwrap_err();
    assert!(matches!(e, SmcError::Truncated { .. }), "{e}");
    // Mode page: wrong page code, short page, block descriptors past the end.
    let mut m = fixture!("ts3100-mode");
    m[4] = 0x1c;
    assert!(parse_address_assignment(&m).is_err());
    let m = fixture!("ts3100-mode");
    assert!(parse_address_assignment(&m[..10]).is_err());
    let mut m = fixture!("ts3100-mode");
    m[3] = 200;
    assert!(parse_address_assignment(&m).is_err());
    assert!(parse_inquiry(&[8; 35]).is_err());
}

#[test]
fn inquiry_and_sense() {
    let mut q = vec![0u8; 36];
    q[0] = 0x08;
    q[8..16].copy_from_slice(b"IBM     ");
    q[16..32].copy_from_slice(b"3573-TL         ");
    q[32..36].copy_from_slice(b"F.11");
    let i = parse_inquiry(&q).unwrap();
    assert_eq!(i.peripheral_type, PERIPHERAL_MEDIUM_CHANGER);
    assert_eq!((i.vendor.as_str(), i.product.as_str()), ("IBM", "3573-TL"));
    assert_eq!(i.revision, "F.11");
    // Fixed format: ILLEGAL REQUEST, 3Bh/0Dh destination full.
    let mut fixed = [0u8; 18];
    fixed[0] = 0x70;
    fixed[2] = 0x05;
    fixed[12] = 0x3b;
    fixed[13] = 0x0d;
    let s = parse_sense(&fixed).unwrap();
    assert_eq!(
        s.to_string(),
        "ILLEGAL REQUEST (key 0x5), ASC/ASCQ 3bh/0dh: medium destination element full"
    );
    assert!(!s.send_again());
    // Descriptor format: NOT READY, becoming ready.
    let s = parse_sense(&[0x72, 0x02, 0x04, 0x01, 0, 0, 0, 0]).unwrap();
    assert_eq!((s.key, s.asc, s.ascq), (2, 4, 1));
    assert!(!s.send_again());
    // What tgt's changer answered the first command pbio sent it in the
    // QEMU guest (hw-tests/vm): UNIT ATTENTION, power on or reset.
    let ua = [
        0x70, 0, 0x06, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0,
    ];
    let s = parse_sense(&ua).unwrap();
    assert_eq!(
        s.to_string(),
        "UNIT ATTENTION (key 0x6), ASC/ASCQ 29h/00h: power on or reset"
    );
    assert!(s.send_again());
    assert_eq!(parse_sense(&[]), None);
    assert_eq!(parse_sense(&[0x12, 0, 0]), None);
    assert_eq!(ascii_field(b"AB\x01C  \0\0"), "AB?C");
}

proptest! {
    /// Random bytes never panic the parsers.
    #[test]
    fn random_answers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), ids: bool) {
        let _ = parse_element_status_short(&bytes, ids);
        let _ = parse_element_status(&bytes, ids);
        let _ = parse_address_assignment(&bytes);
        let _ = parse_inquiry(&bytes);
        let _ = parse_sense(&bytes);
    }

    /// An answer cut anywhere, read as a short one: never a panic.
    #[test]
    fn answers_cut_anywhere_never_panic(cut in 0usize..200, ids: bool) {
        let r = fixture!("tgt-drives-dvcid");
        if let Ok(report) = parse_element_status_short(&r[..cut.min(r.len())], ids) {
            prop_assert!(report.elements.len() <= 3);
        }
    }

    /// A valid answer with random damage (a byte changed, the rest kept)
    /// never panics either, and what it accepts stays within the bytes.
    #[test]
    fn damaged_answers_never_panic(at in 0usize..0x2e0, value: u8, ids: bool) {
        let mut r = fixture!("ts3100-status");
        let at = at % r.len();
        r[at] = value;
        if let Ok(report) = parse_element_status(&r, ids) {
            prop_assert!(report.elements.len() * DESCRIPTOR_FIXED_BYTES <= r.len());
        }
    }
}
