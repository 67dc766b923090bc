//! Opening a set for reading: every device's label checked against the
//! others and against the set's catalog (and its MACs with `--key`) before
//! any byte is restored.

use crate::device::{self, Access, Device, DeviceSpec, Mode};
use crate::format::{Catalog, Label, LabelState, MacKey, SetId};
use crate::media::{self, MediaError};

use super::{Disagreement, MacOf, RestoreError};

/// A device of a set, opened for reading, and its label.
pub(super) type OpenDevice = (Box<dyn Device>, Label);

/// The devices of one set, opened for reading, and its catalog.
pub struct OpenSet {
    pub devices: Vec<(Box<dyn Device>, Label)>,
    pub catalog: Catalog,
    /// Devices given that could not be read at all, or whose catalog was
    /// not used (left out, with why).
    pub unreadable: Vec<RestoreError>,
    /// The set carries MACs (it was written with `--key`). Without the key
    /// they are not checked: the caller says so.
    pub keyed: bool,
    /// Per device (as `devices`): its label is the one the catalog gives
    /// its volume, not read yet (a library's cartridge, loaded only to
    /// read its records: `open_cartridges`); the cartridge's own is read
    /// and checked when it is loaded (`check_unread`). Empty: every label
    /// was read at open.
    pub unread: Vec<bool>,
    /// The set's MAC key (`--key`, or an encrypted set's), for the labels
    /// read after open (`unread`).
    pub mac_key: Option<MacKey>,
}

/// A tape's label stays Writing (it cannot be rewritten); its catalog is
/// tape file 1, complete when it ends with an End record and a filemark.
/// When it reads back, the label is completed in memory, with positions
/// in logical object numbers and the BLAKE3 of the catalog read as its
/// `catalog_digest`, so that the rest of restore treats the tape like any
/// device with a Complete label (and the catalogs of a set's tapes and
/// disks are compared by their digests).
fn complete_tape_label(
    dev: &dyn Device,
    label: &mut Label,
) -> Option<Result<media::CatalogRead, MediaError>> {
    if dev.access() != Access::Sequential || label.state == LabelState::Complete {
        return None;
    }
    let read = media::read_catalog(dev, label);
    if let Ok(read) = &read {
        let catalog = &read.catalog;
        if catalog.set_id == label.set_id {
            if let Some(entry) = catalog.devices.get(label.device_index as usize) {
                label.state = LabelState::Complete;
                label.data_end = entry.data_end;
                label.catalog_offset = entry.data_end + 1;
                let encoded = catalog.encode().len() as u64;
                label.catalog_bytes = if label.seal.is_sealed() {
                    crate::format::seal::sealed_catalog_bytes(encoded)
                } else {
                    encoded
                };
                label.catalog_digest = read.digest;
            }
        }
    }
    Some(read)
}

/// A device opened for reading, its label, and for a tape the catalog
/// read while completing its label.
type Opened = (
    Box<dyn Device>,
    Label,
    Option<Result<media::CatalogRead, MediaError>>,
);

/// Open the given devices, check they belong to one complete set, and read
/// the catalog (from the first device whose catalog reads back correctly).
/// With `key`, the set's MACs are checked (`open_sets`).
pub fn open_set(specs: &[DeviceSpec], key: Option<&MacKey>) -> Result<OpenSet, RestoreError> {
    let mut sets = open_sets(specs, key)?;
    if sets.len() > 1 {
        let (a, b) = (&sets[0], &sets[1]);
        return Err(RestoreError::DifferentSets {
            device: a.devices[0].0.path().display().to_string(),
            other: b.devices[0].0.path().display().to_string(),
            set: a.catalog.set_id.to_string(),
            other_set: b.catalog.set_id.to_string(),
        });
    }
    Ok(sets.remove(0))
}

/// Open the given devices, group them by set (in the order each set first
/// appears), and read each set's catalog as `open_set` does. Before any
/// byte is restored, every device's membership is checked (docs/FORMAT.md,
/// "Reading a set"): its label's device index is in the set and given
/// once, all labels of a set agree (device count, chunk size, creation
/// time, catalog digest) and agree with the catalog, and the catalog read
/// hashes to the digest the labels give. With `key`, every label's MAC and
/// the catalog's MAC must match it. A device that disagrees is refused,
/// named with the device it disagrees with.
pub fn open_sets(specs: &[DeviceSpec], key: Option<&MacKey>) -> Result<Vec<OpenSet>, RestoreError> {
    if specs.is_empty() {
        return Err(RestoreError::NoDevices);
    }
    let devices = specs
        .iter()
        .map(|spec| device::open(spec, Mode::Read))
        .collect::<Result<Vec<_>, _>>()?;
    open_devices(devices, key)
}

/// `open_sets` over devices already opened (the cartridges of a library:
/// each attached while its label and catalog are read, detached after).
pub fn open_devices(
    devices: Vec<Box<dyn Device>>,
    key: Option<&MacKey>,
) -> Result<Vec<OpenSet>, RestoreError> {
    let count = devices.len();
    if count == 0 {
        return Err(RestoreError::NoDevices);
    }
    let mut groups: Vec<Vec<Opened>> = Vec::new();
    let mut unreadable = Vec::new();
    for dev in devices {
        let Some((dev, label, tape_catalog)) = read_opened(dev, key, count, &mut unreadable)?
        else {
            continue;
        };
        let Some(group) = groups.iter_mut().find(|g| g[0].1.set_id == label.set_id) else {
            groups.push(vec![(dev, label, tape_catalog)]);
            continue;
        };
        for (other, other_label, _) in group.iter() {
            labels_agree((other.as_ref(), other_label), (dev.as_ref(), &label))?;
        }
        group.push((dev, label, tape_catalog));
    }
    if groups.is_empty() {
        return Err(RestoreError::NoneReadable { errors: unreadable });
    }
    let mut sets = groups
        .into_iter()
        .map(|group| {
            let key = set_mac_key(group[0].0.as_ref(), &group[0].1, key)?;
            assemble(group, key.as_ref())
        })
        .collect::<Result<Vec<OpenSet>, RestoreError>>()?;
    // Which set an unreadable device belonged to is unknown: named once.
    sets[0]
        .unreadable
        .extend(unreadable.into_iter().map(RestoreError::Media));
    Ok(sets)
}

/// A device's label read (its MAC checked with `key`), and for a tape its
/// catalog (`complete_tape_label`), each cartridge of a library loaded for
/// it and left in its drive after. None: the label cannot be read, which
/// among several devices (`count`) leaves it out (the error in
/// `unreadable`) and stops a restore from one device.
fn read_opened(
    dev: Box<dyn Device>,
    key: Option<&MacKey>,
    count: usize,
    unreadable: &mut Vec<MediaError>,
) -> Result<Option<Opened>, RestoreError> {
    let read = attach(dev.as_ref()).and_then(|()| media::read_label(dev.as_ref()));
    let mut label = match read {
        Ok(label) => label,
        // One unreadable device does not stop a restore from the others.
        Err(e) if count > 1 => {
            dev.detach();
            unreadable.push(e);
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(key) = set_mac_key(dev.as_ref(), &label, key)? {
        check_label_mac(dev.as_ref(), &label, &key)?;
    }
    let tape_catalog = complete_tape_label(dev.as_ref(), &mut label);
    dev.detach();
    Ok(Some((dev, label, tape_catalog)))
}

/// A cartridge of a library with its barcode, if it has one.
pub type Cartridge = (Box<dyn Device>, Option<String>);

/// `open_devices` for the cartridges of ONE set in a library, which a
/// changer loads into its drives: each is loaded once (issue 20). The
/// catalog comes from the first cartridge that gives one, the last first
/// (the last volume of each drive holds it, and the volumes are in slot
/// order); each cartridge loaded for it stays in its drive until another
/// needs the drive, so that its records are read first. Every other
/// cartridge the catalog names by its barcode gets the label the catalog
/// gives its volume and is loaded only to read its records, its own label
/// then checked before anything else is read (`check_unread`: a cartridge
/// swapped since the label cache or the inventory was read is refused).
/// A cartridge without a barcode, or one the catalog does not name, is
/// loaded for its label here, as `open_devices` does.
pub fn open_cartridges(
    mut cartridges: Vec<Cartridge>,
    key: Option<&MacKey>,
) -> Result<Vec<OpenSet>, RestoreError> {
    let count = cartridges.len();
    if count == 0 {
        return Err(RestoreError::NoDevices);
    }
    let mut loaded: Vec<Opened> = Vec::new();
    let mut unreadable = Vec::new();
    let mut notes = Vec::new();
    while let Some((dev, _)) = cartridges.pop() {
        let Some(opened) = read_opened(dev, key, count, &mut unreadable)? else {
            continue;
        };
        if let Some(refused) = joins(&loaded, &opened)? {
            notes.push(refused);
            continue;
        }
        let catalog_read =
            opened.1.state == LabelState::Complete && !matches!(opened.2, Some(Err(_)));
        loaded.push(opened);
        if catalog_read {
            break;
        }
    }
    if loaded.is_empty() {
        return Err(RestoreError::NoneReadable { errors: unreadable });
    }
    let mac_key = set_mac_key(loaded[0].0.as_ref(), &loaded[0].1, key)?;
    let mut set = assemble(loaded, mac_key.as_ref())?;
    let source = set
        .devices
        .iter()
        .find(|(_, l)| l.state == LabelState::Complete)
        .map(|(dev, _)| dev.path().display().to_string())
        .unwrap_or_default();
    let mut template = set.devices[0].1;
    template.state = LabelState::Writing;
    (template.catalog_offset, template.catalog_bytes) = (0, 0);
    template.catalog_digest = [0; 32];
    let mut unread = vec![false; set.devices.len()];
    for (dev, barcode) in cartridges {
        let named = barcode.as_deref().and_then(|b| {
            let catalog = &set.catalog.devices;
            catalog.iter().position(|d| d.path == b.as_bytes())
        });
        let volume =
            named.filter(|&v| !set.devices.iter().any(|(_, l)| l.device_index == v as u32));
        if let Some(volume) = volume {
            let mut label = template;
            label.device_index = volume as u32;
            label.data_end = set.catalog.devices[volume].data_end;
            set.devices.push((dev, label));
            unread.push(true);
            continue;
        }
        let Some(opened) = read_opened(dev, key, count, &mut unreadable)? else {
            continue;
        };
        let (dev, label, _) = opened;
        if label.set_id != set.catalog.set_id {
            let first = set.devices[0].0.as_ref();
            notes.push(other_set(first, set.catalog.set_id, dev.as_ref(), &label));
            continue;
        }
        for (other, other_label) in &set.devices {
            labels_agree((other.as_ref(), other_label), (dev.as_ref(), &label))?;
        }
        let mut member = (dev, label);
        let mac_matches = None;
        check_members(
            std::slice::from_mut(&mut member),
            &set.catalog,
            &source,
            mac_matches,
        )?;
        set.devices.push(member);
        unread.push(false);
    }
    set.unread = unread;
    set.mac_key = mac_key;
    set.unreadable.extend(notes);
    set.unreadable
        .extend(unreadable.into_iter().map(RestoreError::Media));
    Ok(vec![set])
}

/// Whether a cartridge read for the catalog joins those read before it:
/// Some(why not) for one of another set (left out, said), an error for
/// one whose label disagrees with theirs.
fn joins(
    loaded: &[Opened],
    (dev, label, _): &Opened,
) -> Result<Option<RestoreError>, RestoreError> {
    let Some((first, first_label, _)) = loaded.first() else {
        return Ok(None);
    };
    if first_label.set_id != label.set_id {
        let (first, dev) = (first.as_ref(), dev.as_ref());
        return Ok(Some(other_set(first, first_label.set_id, dev, label)));
    }
    for (other, other_label, _) in loaded {
        labels_agree((other.as_ref(), other_label), (dev.as_ref(), label))?;
    }
    Ok(None)
}

/// A cartridge of another set than the first one read (`first`, of `set`):
/// left out, said.
fn other_set(first: &dyn Device, set: SetId, dev: &dyn Device, label: &Label) -> RestoreError {
    RestoreError::DifferentSets {
        device: first.path().display().to_string(),
        other: dev.path().display().to_string(),
        set: set.to_string(),
        other_set: label.set_id.to_string(),
    }
}

/// The label of a cartridge whose label at open was the catalog's
/// (`OpenSet::unread`), read once it is loaded and before anything else:
/// it must be the same volume of the same set (with `key`, its MAC
/// checked too). A cartridge swapped since the label cache, the inventory
/// or the catalog named it is refused, named, and nothing is read from it.
pub(super) fn check_unread(
    dev: &dyn Device,
    expected: &Label,
    key: Option<&MacKey>,
    catalog: &Catalog,
) -> Result<(), RestoreError> {
    let found = media::read_label(dev)?;
    if let Some(key) = key {
        check_label_mac(dev, &found, key)?;
    }
    let same = (found.set_id, found.device_index, found.device_count)
        == (
            expected.set_id,
            expected.device_index,
            expected.device_count,
        )
        && (found.chunk_bytes, found.created_unix_ns)
            == (expected.chunk_bytes, expected.created_unix_ns);
    if same {
        return Ok(());
    }
    Err(RestoreError::WrongVolume {
        device: dev.path().display().to_string(),
        set: expected.set_id.to_string(),
        volume: expected.device_index,
        found: match catalog.devices.get(found.device_index as usize) {
            Some(its) if found.set_id == catalog.set_id => format!(
                "volume {}, which the catalog names {}",
                found.device_index,
                String::from_utf8_lossy(&its.path)
            ),
            _ => format!("volume {} of set {}", found.device_index, found.set_id),
        },
    })
}

/// The MAC key of `label`'s set: an encrypted set's (`--encrypt`) from
/// its data key, opened from the label's envelope with the user's key
/// (refused, exit 2, without one or with another); else `key` as given.
pub(super) fn set_mac_key(
    dev: &dyn Device,
    label: &Label,
    key: Option<&MacKey>,
) -> Result<Option<MacKey>, RestoreError> {
    if !label.seal.is_sealed() {
        return Ok(key.copied());
    }
    match crate::format::seal::keyring::open(label.set_id, &label.seal) {
        Ok(data_key) => Ok(Some(data_key.mac_key())),
        Err(refusal) => Err(RestoreError::Encrypted {
            device: dev.path().display().to_string(),
            set: label.set_id.to_string(),
            wrong_key: refusal == crate::format::seal::keyring::Refusal::WrongKey,
        }),
    }
}

/// A label's MAC checked with `key` (before anything else is read from
/// the device): refused when it does not match, or is zero (the set was
/// written without a key).
pub(super) fn check_label_mac(
    dev: &dyn Device,
    label: &Label,
    key: &MacKey,
) -> Result<(), RestoreError> {
    if crate::format::hash_eq(&label.mac_for(key), &label.mac) {
        return Ok(());
    }
    Err(RestoreError::Mac {
        device: dev.path().display().to_string(),
        what: MacOf::Label,
        zero: label.mac == [0; 32],
    })
}

/// Two devices that claim the same set must agree on what their labels
/// say of the whole set; when they do not, at least one of them lies (a
/// device of another run, or a forged label), and both are named.
pub(super) fn labels_agree(
    (a_dev, a): (&dyn Device, &Label),
    (b_dev, b): (&dyn Device, &Label),
) -> Result<(), RestoreError> {
    let (device, other) = (a_dev.path().display(), b_dev.path().display());
    let refuse = |why: Disagreement| {
        Err(RestoreError::Membership {
            device: device.to_string(),
            other: other.to_string(),
            set: a.set_id.to_string(),
            why,
        })
    };
    if a.device_index == b.device_index {
        return Err(RestoreError::SameIndex {
            device: device.to_string(),
            other: other.to_string(),
            index: a.device_index,
        });
    }
    if a.device_count != b.device_count {
        return refuse(Disagreement::DeviceCount(a.device_count, b.device_count));
    }
    if a.chunk_bytes != b.chunk_bytes {
        return refuse(Disagreement::ChunkBytes(a.chunk_bytes, b.chunk_bytes));
    }
    if a.created_unix_ns != b.created_unix_ns {
        return refuse(Disagreement::Created(a.created_unix_ns, b.created_unix_ns));
    }
    if a.state == LabelState::Complete
        && b.state == LabelState::Complete
        && a.catalog_digest != b.catalog_digest
    {
        return refuse(Disagreement::CatalogDigest);
    }
    Ok(())
}

/// The catalog of one set's devices: from the first complete device whose
/// catalog reads back and hashes to the digest its label gives (every
/// Complete label of the set gives the same one: `labels_agree`).
fn assemble(opened: Vec<Opened>, key: Option<&MacKey>) -> Result<OpenSet, RestoreError> {
    let mut devices = Vec::with_capacity(opened.len());
    let mut tape_catalogs = Vec::with_capacity(opened.len());
    for (dev, label, tape_catalog) in opened {
        devices.push((dev, label));
        tape_catalogs.push(tape_catalog);
    }
    let mut last_error = None;
    let mut notes = Vec::new();
    for (from, ((dev, label), tape_catalog)) in
        devices.iter().zip(tape_catalogs.iter_mut()).enumerate()
    {
        if let Some(Err(e)) = tape_catalog.take_if(|read| read.is_err()) {
            last_error = Some(e.into());
            continue;
        }
        if label.state != LabelState::Complete {
            continue;
        }
        let read = match tape_catalog.take() {
            Some(read) => read,
            None => attach(dev.as_ref()).and_then(|()| {
                let read = media::read_catalog(dev.as_ref(), label);
                dev.detach();
                read
            }),
        };
        match read {
            Ok(read) if read.catalog.set_id != label.set_id => {
                last_error = Some(RestoreError::ForeignCatalog {
                    device: dev.path().display().to_string(),
                })
            }
            Ok(read) if read.digest != label.catalog_digest => {
                let refused = || RestoreError::CatalogDigest {
                    device: dev.path().display().to_string(),
                };
                notes.push(refused());
                last_error = Some(refused());
            }
            Ok(read) => return finish_open(devices, read.catalog, from, key, notes),
            Err(e) => last_error = Some(e.into()),
        }
    }
    Err(last_error.unwrap_or_else(|| RestoreError::NoCatalog {
        set: devices[0].1.set_id.to_string(),
    }))
}

/// Check every device against the catalog read from `devices[from]` (and,
/// with `key`, the catalog's MAC). A device without a catalog of its own
/// (it failed during the backup) is read up to the end that the set's
/// catalog records for it.
fn finish_open(
    mut devices: Vec<(Box<dyn Device>, Label)>,
    catalog: Catalog,
    from: usize,
    key: Option<&MacKey>,
    notes: Vec<RestoreError>,
) -> Result<OpenSet, RestoreError> {
    let source = devices[from].0.path().display().to_string();
    let mac_matches = key.map(|key| crate::format::hash_eq(&catalog.mac_for(key), &catalog.mac));
    check_members(&mut devices, &catalog, &source, mac_matches)?;
    let keyed = catalog.mac != [0; 32] || devices.iter().any(|(_, l)| l.mac != [0; 32]);
    Ok(OpenSet {
        devices,
        catalog,
        unreadable: notes,
        keyed,
        unread: Vec::new(),
        mac_key: key.copied(),
    })
}

/// The devices of a set checked against its catalog `head` (read from
/// `source`): the catalog's MAC first (`mac_matches`: whether it matches
/// the key; None without a key), then every device's index, count, chunk
/// size and creation time. A device without a catalog of its own (it
/// failed during the backup) is read up to the end that the catalog
/// records for it.
pub(super) fn check_members(
    devices: &mut [(Box<dyn Device>, Label)],
    head: &Catalog,
    source: &str,
    mac_matches: Option<bool>,
) -> Result<(), RestoreError> {
    if mac_matches == Some(false) {
        return Err(RestoreError::Mac {
            device: source.to_string(),
            what: MacOf::Catalog,
            zero: head.mac == [0; 32],
        });
    }
    let count = head.devices.len();
    for (dev, l) in devices.iter_mut() {
        let name = dev.path().display();
        if l.device_count as usize != count || l.device_index as usize >= count {
            return Err(RestoreError::NotInCatalog {
                device: name.to_string(),
                index: l.device_index,
                count: l.device_count,
                source_device: source.to_string(),
                catalog_count: count,
            });
        }
        if l.chunk_bytes != head.chunk_bytes || l.created_unix_ns != head.created_unix_ns {
            return Err(RestoreError::CatalogDisagrees {
                device: name.to_string(),
                source_device: source.to_string(),
            });
        }
        if l.state != LabelState::Complete {
            l.data_end = head.devices[l.device_index as usize].data_end;
        }
    }
    Ok(())
}

/// Load a library's cartridge into a drive (a no-op for other devices);
/// a cartridge that cannot be loaded is a media error naming the device.
pub(super) fn attach(dev: &dyn Device) -> Result<(), MediaError> {
    dev.attach().map_err(|error| MediaError::Io {
        device: dev.path().display().to_string(),
        op: "load the cartridge",
        offset: 0,
        error,
    })
}
