//! What a device's medium holds: the magic numbers libblkid reads, at the
//! same offsets, and pbio's own label. Pure functions over a reader, so
//! they are tested on byte buffers too.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::Finding;
use crate::format::{Label, BLOCK_BYTES, LABEL_MAGIC};

/// Bytes read from the start of a device: covers every head signature
/// checked here (btrfs at 64 KiB + 64, swap with 64 KiB pages).
pub const HEAD_BYTES: usize = 128 << 10;

/// Linux md superblock magic (both 0.90 and 1.x).
const MD_MAGIC: u32 = 0xa92b_4efc;

/// What kind of thing a signature says the device holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Filesystem,
    PartitionTable,
    Raid,
    Lvm,
    Swap,
    Crypto,
}

/// A recognised on-disk signature, named as `blkid -p` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub usage: Usage,
    /// blkid's TYPE (filesystems, raid, lvm, swap, crypto) or PTTYPE (partition tables).
    pub name: &'static str,
    /// Byte offset of the magic on the device.
    pub offset: u64,
    /// The volume label, when the format has one and it is set.
    pub label: Option<String>,
    /// A version or variant worth showing (md "1.2", ...).
    pub detail: Option<String>,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.usage {
            Usage::Filesystem => write!(f, "a filesystem ({})", self.name)?,
            Usage::PartitionTable => write!(f, "a partition table ({})", self.name)?,
            Usage::Raid => write!(f, "a Linux RAID member ({})", self.name)?,
            Usage::Lvm => write!(f, "an LVM physical volume ({})", self.name)?,
            Usage::Swap => write!(f, "swap space ({})", self.name)?,
            Usage::Crypto => write!(f, "an encrypted volume ({})", self.name)?,
        }
        if let Some(d) = &self.detail {
            write!(f, " version {d}")?;
        }
        if let Some(l) = &self.label {
            write!(f, " labelled \"{l}\"")?;
        }
        write!(f, " at offset {}", self.offset)
    }
}

pub(super) fn read_findings(file: &File, size_bytes: u64) -> io::Result<Vec<Finding>> {
    let mut read = |offset: u64, buf: &mut [u8]| read_full_at(file, offset, buf);
    detect(&mut read, size_bytes)
}

/// Read `buf.len()` bytes at `offset`; bytes past the end read as zero.
fn read_full_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// Everything on the medium of `size_bytes` bytes, read through `read_at`
/// (which fills the whole buffer, zeros past the end). A valid pbio label
/// supersedes every other signature: pbio wrote block 0 itself, so what
/// lies further on is pbio's own data or a stale leftover.
pub fn detect(
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    size_bytes: u64,
) -> io::Result<Vec<Finding>> {
    let head_len = HEAD_BYTES.min(size_bytes as usize);
    let mut head = vec![0u8; HEAD_BYTES];
    read_at(0, &mut head[..head_len])?;

    if head[..8] == LABEL_MAGIC {
        return Ok(vec![match Label::decode(&head[..BLOCK_BYTES]) {
            Ok(label) => Finding::PbioSet { label },
            Err(e) => Finding::PbioDamaged {
                error: e.to_string(),
            },
        }]);
    }
    let mut sigs = head_signatures(&head);
    sigs.extend(tail_signatures(read_at, size_bytes, &sigs)?);
    Ok(sigs.into_iter().map(Finding::Signature).collect())
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// A fixed-size, NUL-padded label field, escaped for the terminal (it
/// comes from the medium); None when empty.
fn label_text(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = crate::units::shown_name(raw[..end].trim_ascii());
    (!text.is_empty()).then_some(text)
}

pub(super) fn sig(usage: Usage, name: &'static str, offset: u64) -> Signature {
    Signature {
        usage,
        name,
        offset,
        label: None,
        detail: None,
    }
}

/// Signatures found in the first `HEAD_BYTES` of a device.
pub fn head_signatures(head: &[u8]) -> Vec<Signature> {
    assert_eq!(head.len(), HEAD_BYTES, "caller passes the whole head");
    let mut out = Vec::new();

    // ext2/3/4 and jbd: superblock at 1024, s_magic 0xEF53 at +0x38.
    let sb = &head[1024..2048];
    if le16(sb, 0x38) == 0xEF53 {
        let mut s = sig(Usage::Filesystem, ext_variant(sb), 1024 + 0x38);
        s.label = label_text(&sb[0x78..0x88]);
        out.push(s);
    }
    // xfs: "XFSB" at 0, label (12 bytes) at 108.
    if &head[0..4] == b"XFSB" {
        let mut s = sig(Usage::Filesystem, "xfs", 0);
        s.label = label_text(&head[108..120]);
        out.push(s);
    }
    // btrfs: superblock at 64 KiB, magic at +0x40, label (256 bytes) at +0x12b.
    if &head[0x10040..0x10048] == b"_BHRfS_M" {
        let mut s = sig(Usage::Filesystem, "btrfs", 0x10040);
        s.label = label_text(&head[0x1012b..0x1022b]);
        out.push(s);
    }
    // LUKS 1 and 2: "LUKS\xba\xbe" at 0.
    if head[0..6] == *b"LUKS\xba\xbe" {
        out.push(sig(Usage::Crypto, "crypto_LUKS", 0));
    }
    // swap: "SWAPSPACE2" (or the old "SWAP-SPACE") ends the first page, for
    // each page size Linux has; label (16 bytes) at 1024 + 28.
    for page in [4096usize, 8192, 16384, 65536] {
        let magic = &head[page - 10..page];
        if magic == b"SWAPSPACE2" || magic == b"SWAP-SPACE" {
            let mut s = sig(Usage::Swap, "swap", (page - 10) as u64);
            if magic == b"SWAPSPACE2" {
                s.label = label_text(&head[1052..1068]);
            }
            out.push(s);
            break;
        }
    }
    // LVM2 PV: "LABELONE" label header in one of the first four sectors,
    // type "LVM2 001" at +24.
    for sector in 0..4usize {
        let at = sector * 512;
        if &head[at..at + 8] == b"LABELONE" && &head[at + 24..at + 32] == b"LVM2 001" {
            out.push(sig(Usage::Lvm, "LVM2_member", at as u64));
            break;
        }
    }
    // md 1.1 (superblock at 0) and 1.2 (at 4 KiB): magic, major_version 1.
    for (at, version) in [(0usize, "1.1"), (4096, "1.2")] {
        if le32(head, at) == MD_MAGIC && le32(head, at + 4) == 1 {
            let mut s = sig(Usage::Raid, "linux_raid_member", at as u64);
            s.detail = Some(version.into());
            s.label = label_text(&head[at + 32..at + 64]);
            out.push(s);
        }
    }
    let boot_signature = head[510] == 0x55 && head[511] == 0xAA;
    // vfat: a FAT boot sector names itself at 0x36 (FAT12/16) or 0x52 (FAT32).
    let vfat = (head[0] == 0xEB || head[0] == 0xE9)
        && (&head[0x52..0x57] == b"MSWIN"
            || &head[0x52..0x5a] == b"FAT32   "
            || &head[0x36..0x3b] == b"MSDOS"
            || &head[0x36..0x39] == b"FAT");
    if vfat && boot_signature {
        let mut s = sig(Usage::Filesystem, "vfat", 0);
        let at = if &head[0x52..0x5a] == b"FAT32   " {
            0x47
        } else {
            0x2b
        };
        s.label = label_text(&head[at..at + 11]).filter(|l| l != "NO NAME");
        out.push(s);
    }
    // ntfs: OEM id "NTFS    " at 3.
    let ntfs = &head[3..11] == b"NTFS    ";
    if ntfs {
        out.push(sig(Usage::Filesystem, "ntfs", 3));
    }
    // iso9660: primary volume descriptor at 32 KiB, "CD001" at +1.
    if &head[0x8001..0x8006] == b"CD001" {
        let mut s = sig(Usage::Filesystem, "iso9660", 0x8001);
        s.label = label_text(&head[0x8028..0x8048]);
        out.push(s);
    }
    // GPT: header "EFI PART" at LBA 1 (512- or 4096-byte sectors).
    let gpt = [512usize, 4096]
        .into_iter()
        .find(|&at| &head[at..at + 8] == b"EFI PART");
    if let Some(at) = gpt {
        out.push(sig(Usage::PartitionTable, "gpt", at as u64));
    } else if boot_signature && !vfat && !ntfs {
        // DOS/MBR: 0x55AA and four entries whose boot flags are 0 or 0x80
        // (libblkid's test); a protective MBR (type 0xEE) means GPT.
        let entries = &head[446..510];
        let flags_valid = entries.chunks(16).all(|e| e[0] == 0 || e[0] == 0x80);
        if flags_valid {
            let protective = entries.chunks(16).any(|e| e[4] == 0xEE);
            out.push(sig(
                Usage::PartitionTable,
                if protective { "gpt" } else { "dos" },
                510,
            ));
        }
    }
    out
}

/// blkid's ext2/ext3/ext4/jbd distinction, from the feature flags.
fn ext_variant(sb: &[u8]) -> &'static str {
    const COMPAT_HAS_JOURNAL: u32 = 0x0004;
    const INCOMPAT_FILETYPE: u32 = 0x0002;
    const INCOMPAT_RECOVER: u32 = 0x0004;
    const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
    const INCOMPAT_META_BG: u32 = 0x0010;
    const RO_COMPAT_SUPPORTED: u32 = 0x0001 | 0x0002 | 0x0004; // sparse_super, large_file, btree_dir
    let compat = le32(sb, 0x5c);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return "jbd";
    }
    let ext2_incompat = INCOMPAT_FILETYPE | INCOMPAT_META_BG;
    let ext3_incompat = ext2_incompat | INCOMPAT_RECOVER;
    let old_ro = ro_compat & !RO_COMPAT_SUPPORTED == 0;
    if compat & COMPAT_HAS_JOURNAL == 0 && old_ro && incompat & !ext2_incompat == 0 {
        "ext2"
    } else if compat & COMPAT_HAS_JOURNAL != 0 && old_ro && incompat & !ext3_incompat == 0 {
        "ext3"
    } else {
        "ext4"
    }
}

/// Signatures kept near the end of a device: md 0.90 and 1.0 superblocks
/// and the backup GPT header (reported only when the primary is gone).
fn tail_signatures(
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    size_bytes: u64,
    head: &[Signature],
) -> io::Result<Vec<Signature>> {
    let mut out = Vec::new();
    let mut block = [0u8; 8];
    // md 0.90: the last 64 KiB-aligned 64 KiB of the device; host-endian magic.
    if size_bytes >= 128 << 10 {
        let at = (size_bytes & !((64 << 10) - 1)) - (64 << 10);
        read_at(at, &mut block)?;
        if le32(&block, 0) == MD_MAGIC || be32(&block, 0) == MD_MAGIC {
            let mut s = sig(Usage::Raid, "linux_raid_member", at);
            s.detail = Some("0.90".into());
            out.push(s);
        }
    }
    // md 1.0: 8 KiB from the end, rounded down to 4 KiB.
    if size_bytes >= 16 << 10 {
        let at = ((size_bytes / 512 - 16) & !7) * 512;
        read_at(at, &mut block)?;
        if le32(&block, 0) == MD_MAGIC && le32(&block, 4) == 1 {
            let mut s = sig(Usage::Raid, "linux_raid_member", at);
            s.detail = Some("1.0".into());
            out.push(s);
        }
    }
    // Backup GPT header in the last LBA (512- or 4096-byte sectors).
    if !head.iter().any(|s| s.name == "gpt") && size_bytes >= HEAD_BYTES as u64 {
        for lba in [512u64, 4096] {
            read_at(size_bytes - lba, &mut block)?;
            if &block == b"EFI PART" {
                let mut s = sig(Usage::PartitionTable, "gpt", size_bytes - lba);
                s.detail = Some("backup header only".into());
                out.push(s);
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::Policy;
    use super::*;
    use crate::format::{LabelState, SetId};

    fn detect_in(image: &[u8]) -> Vec<Finding> {
        let mut read = |offset: u64, buf: &mut [u8]| {
            let start = (offset as usize).min(image.len());
            let end = (start + buf.len()).min(image.len());
            buf[..end - start].copy_from_slice(&image[start..end]);
            buf[end - start..].fill(0);
            Ok(())
        };
        detect(&mut read, image.len() as u64).unwrap()
    }

    fn names(image: &[u8]) -> Vec<&'static str> {
        detect_in(image)
            .into_iter()
            .map(|f| match f {
                Finding::Signature(s) => s.name,
                Finding::PbioSet { .. } => "pbio",
                Finding::PbioDamaged { .. } => "pbio-damaged",
                other => panic!("{other:?}"),
            })
            .collect()
    }

    const MIB: usize = 1 << 20;

    #[test]
    fn zeros_hold_nothing() {
        assert!(detect_in(&vec![0u8; MIB]).is_empty());
        assert!(detect_in(&[0u8; 100]).is_empty());
        assert!(detect_in(&[]).is_empty());
    }

    #[test]
    fn ext_variants_by_features() {
        let mut img = vec![0u8; MIB];
        img[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        img[1024 + 0x78..1024 + 0x7c].copy_from_slice(b"data");
        assert_eq!(names(&img), ["ext2"]);
        img[1024 + 0x5c] = 0x04; // has_journal
        assert_eq!(names(&img), ["ext3"]);
        img[1024 + 0x60] = 0x40; // extents
        assert_eq!(names(&img), ["ext4"]);
        img[1024 + 0x60] = 0x08; // journal_dev
        assert_eq!(names(&img), ["jbd"]);
        match &detect_in(&img)[0] {
            Finding::Signature(s) => assert_eq!(s.label.as_deref(), Some("data")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_magic_alone() {
        let cases: Vec<(usize, &[u8], &str)> = vec![
            (0, b"XFSB", "xfs"),
            (0x10040, b"_BHRfS_M", "btrfs"),
            (0, b"LUKS\xba\xbe", "crypto_LUKS"),
            (4096 - 10, b"SWAPSPACE2", "swap"),
            (65536 - 10, b"SWAP-SPACE", "swap"),
            (
                512,
                b"LABELONE\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0LVM2 001",
                "LVM2_member",
            ),
            (4096, b"\xfc\x4e\x2b\xa9\x01\0\0\0", "linux_raid_member"),
            (0, b"\xfc\x4e\x2b\xa9\x01\0\0\0", "linux_raid_member"),
            (512, b"EFI PART", "gpt"),
            (4096, b"EFI PART", "gpt"),
            (3, b"NTFS    ", "ntfs"),
            (0x8001, b"CD001", "iso9660"),
        ];
        for (at, magic, name) in cases {
            let mut img = vec![0u8; MIB];
            img[at..at + magic.len()].copy_from_slice(magic);
            assert_eq!(names(&img), [name], "{name} at {at}");
        }
    }

    #[test]
    fn md_superblocks_at_the_end() {
        let size = 10 * MIB + 12345;
        let mut img = vec![0u8; size];
        let at = (size & !(65536 - 1)) - 65536;
        img[at..at + 4].copy_from_slice(&MD_MAGIC.to_le_bytes());
        assert_eq!(names(&img), ["linux_raid_member"]);
        let mut img = vec![0u8; size];
        let at = ((size / 512 - 16) & !7) * 512;
        img[at..at + 8].copy_from_slice(b"\xfc\x4e\x2b\xa9\x01\0\0\0");
        match &detect_in(&img)[..] {
            [Finding::Signature(s)] => assert_eq!(s.detail.as_deref(), Some("1.0")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mbr_fat_and_gpt_protective() {
        let mut img = vec![0u8; MIB];
        img[510] = 0x55;
        img[511] = 0xAA;
        img[446 + 4] = 0x83; // one Linux partition
        assert_eq!(names(&img), ["dos"]);
        img[446] = 0x12; // invalid boot flag: not a partition table
        assert!(names(&img).is_empty());
        img[446] = 0;
        img[446 + 4] = 0xEE;
        assert_eq!(names(&img), ["gpt"]);
        // A FAT boot sector also ends in 0x55AA: vfat, not dos.
        let mut img = vec![0u8; MIB];
        img[510] = 0x55;
        img[511] = 0xAA;
        img[0] = 0xEB;
        img[0x52..0x5a].copy_from_slice(b"FAT32   ");
        img[0x47..0x52].copy_from_slice(b"BACKUPS    ");
        assert_eq!(names(&img), ["vfat"]);
        // Backup GPT header only.
        let mut img = vec![0u8; MIB];
        img[MIB - 512..MIB - 504].copy_from_slice(b"EFI PART");
        assert_eq!(names(&img), ["gpt"]);
    }

    #[test]
    fn pbio_label_supersedes_and_damage_is_reported() {
        let label = Label {
            set_id: SetId([7; 16]),
            device_index: 1,
            device_count: 2,
            chunk_bytes: 1 << 20,
            block_bytes: 4096,
            created_unix_ns: 1_700_000_000_000_000_000,
            state: LabelState::Complete,
            catalog_offset: 8192,
            catalog_bytes: 100,
            data_end: 8192,
            catalog_digest: [3; 32],
            mac: [0; 32],
            seal: crate::format::seal::LabelSeal::NONE,
        };
        let mut img = vec![0u8; MIB];
        label.encode_into(&mut img[..4096]);
        img[0x10040..0x10048].copy_from_slice(b"_BHRfS_M"); // payload, not a filesystem
        assert_eq!(detect_in(&img), [Finding::PbioSet { label }]);
        img[100] ^= 1;
        assert_eq!(names(&img), ["pbio-damaged"]);

        let policy = Policy::default();
        let set = Finding::PbioSet { label };
        assert!(!set.allowed(&policy));
        assert!(set.allowed(&Policy {
            force: false,
            overwrite: vec![SetId([7; 16])],
        }));
        assert!(!set.allowed(&Policy {
            force: false,
            overwrite: vec![SetId([8; 16])],
        }));
        assert!(set.allowed(&Policy {
            force: true,
            overwrite: vec![],
        }));
        let text = set.describe(&policy);
        assert!(text.contains(&"07".repeat(16)), "{text}");
        assert!(text.contains("device 2 of 2"), "{text}");
        assert!(text.contains("2023-11-14 22:13 UTC"), "{text}");
    }
}
