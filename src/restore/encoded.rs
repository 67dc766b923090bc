//! A set's catalog kept encoded (issue 23): `pbio list` of one
//! random-access device reads the catalog's bytes, proves them against
//! the label (digest, and with `--key` the MACs) exactly as `open_devices`
//! does, and then reads them entry by entry (`CatalogStream`) instead of
//! holding a decoded `CatalogFile` per file. The bytes are written to a
//! temporary file as they are read (`Spilled`), and read back through a
//! window; an encrypted set's catalog is opened whole, in memory.

use crate::device::{Access, Device};
use crate::format::catalog::{CatalogStream, Spilled};
use crate::format::{Label, LabelState, MacKey};
use crate::media::{self, MediaError};

use super::open::{attach, check_label_mac, set_mac_key};
use super::{MacOf, RestoreError};

/// The file `list --export` writes to (created, or truncated): an
/// encrypted set's (`sealed`) catalog is written in the clear, so its file
/// is made mode 0600 (its names, sizes and digests are for the key's
/// holder only).
pub fn create_export(to: &std::path::Path, sealed: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::PermissionsExt;
    let out = std::fs::File::create(to)?;
    if sealed {
        out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(out)
}

/// One device of a set, its label, and the set's catalog as stored on it
/// (opened when the set is encrypted), its digest checked against the
/// label's.
pub struct EncodedSet {
    pub device: Box<dyn Device>,
    pub label: Label,
    held: Held,
    key: Option<MacKey>,
}

/// Where the catalog's encoding is kept.
enum Held {
    /// An encrypted set's, opened (the seal covers the whole).
    Bytes(Vec<u8>),
    Spilled(Spilled),
}

/// `dev`'s label and catalog bytes, proven as `open_devices` proves them;
/// `Err(dev)` back when the device is not one this reads (a tape, or a
/// label that is not Complete): `open_devices` then.
pub fn open_encoded(
    dev: Box<dyn Device>,
    key: Option<&MacKey>,
) -> Result<Result<EncodedSet, Box<dyn Device>>, RestoreError> {
    if dev.access() != Access::Random {
        return Ok(Err(dev));
    }
    attach(dev.as_ref())?;
    let read = (|| -> Result<_, RestoreError> {
        let label = media::read_label(dev.as_ref())?;
        if label.state != LabelState::Complete {
            return Ok(None);
        }
        let key = set_mac_key(dev.as_ref(), &label, key)?;
        if let Some(key) = &key {
            check_label_mac(dev.as_ref(), &label, key)?;
        }
        let (held, digest) = if label.seal.is_sealed() {
            let bytes = media::read_catalog_bytes(dev.as_ref(), &label)?;
            let digest = *blake3::hash(&bytes).as_bytes();
            (Err(bytes), digest)
        } else {
            let (spilled, digest) = media::spill_catalog_bytes(dev.as_ref(), &label)?;
            (Ok(spilled), digest)
        };
        Ok(Some((held, digest, label, key)))
    })();
    dev.detach();
    let Some((held, digest, label, key)) = read? else {
        return Ok(Err(dev));
    };
    let name = || dev.path().display().to_string();
    if digest != label.catalog_digest {
        return Err(RestoreError::CatalogDigest { device: name() });
    }
    let held = match held {
        Ok(spilled) => Held::Spilled(spilled),
        Err(sealed) => Held::Bytes(media::opened_catalog_bytes(sealed, &label).map_err(
            |error| MediaError::Format {
                device: name(),
                what: "catalog",
                offset: label.catalog_offset,
                error,
            },
        )?),
    };
    Ok(Ok(EncodedSet {
        device: dev,
        label,
        held,
        key,
    }))
}

impl EncodedSet {
    /// The catalog, checked as `Catalog::decode` checks it, against the
    /// label (set, device count and index, chunk size, creation time) and
    /// with the key against its MAC, as `open_devices` does.
    pub fn stream(&self) -> Result<CatalogStream<'_>, RestoreError> {
        let device = self.device.path().display().to_string();
        let l = &self.label;
        let stream = match &self.held {
            Held::Bytes(bytes) => CatalogStream::open(bytes),
            Held::Spilled(spilled) => CatalogStream::open_spilled(spilled),
        };
        let stream = stream.map_err(|error| MediaError::Format {
            device: device.clone(),
            what: "catalog",
            offset: l.catalog_offset,
            error,
        })?;
        let c = stream.head();
        if c.set_id != l.set_id {
            return Err(RestoreError::ForeignCatalog { device });
        }
        if let Some(key) = &self.key {
            if !crate::format::hash_eq(&stream.mac_for(key), &c.mac) {
                return Err(RestoreError::Mac {
                    device,
                    what: MacOf::Catalog,
                    zero: c.mac == [0; 32],
                });
            }
        }
        let count = c.devices.len();
        if l.device_count as usize != count || l.device_index as usize >= count {
            return Err(RestoreError::NotInCatalog {
                device: device.clone(),
                index: l.device_index,
                count: l.device_count,
                source_device: device,
                catalog_count: count,
            });
        }
        if l.chunk_bytes != c.chunk_bytes || l.created_unix_ns != c.created_unix_ns {
            return Err(RestoreError::CatalogDisagrees {
                device: device.clone(),
                source_device: device,
            });
        }
        Ok(stream)
    }

    /// Write the catalog's plain encoding (what `Catalog::encode` gives)
    /// to the file `to`, as `list --export` does.
    pub fn export(&self, to: &std::path::Path) -> std::io::Result<()> {
        let mut out = create_export(to, self.label.seal.is_sealed())?;
        match &self.held {
            Held::Bytes(bytes) => std::io::Write::write_all(&mut out, bytes),
            Held::Spilled(spilled) => spilled.copy_to(&mut out),
        }
    }

    /// The set carries MACs (it was written with `--key`).
    pub fn keyed(&self, stream: &CatalogStream) -> bool {
        stream.head().mac != [0; 32] || self.label.mac != [0; 32]
    }
}
