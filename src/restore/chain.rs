//! Sets given together: the devices of a full set and of its increments,
//! in any order, grouped by set and ordered into one chain.
//!
//! The set to rebuild (the *tip*) is the one whose `ancestors` include
//! every other set given; its catalog is the tree that is restored, and
//! each of its files' data is read from the set that holds it (the tip
//! itself, or the ancestor its `origin` names). A given set that the tip
//! does not need (an increment whose changes were all superseded) is read
//! for nothing. Sets that are not one chain are refused.

use std::io::Read;
use std::path::Path;

use super::{OpenSet, RestoreError};
use crate::device::DeviceSpec;
use crate::format::{Catalog, MacKey, SetId, CATALOG_MAGIC};

/// The sets of one chain, opened.
pub struct Chain {
    /// `sets[0]` is the tip (the newest set); the others in the order given.
    pub sets: Vec<OpenSet>,
    /// For each ancestor of the tip (`sets[0].catalog.ancestors[n]`), its
    /// index in `sets`, or None when none of its devices was given.
    pub ancestor_sets: Vec<Option<usize>>,
}

impl Chain {
    /// Order `sets` (each one complete set, distinct) into a chain.
    pub fn new(mut sets: Vec<OpenSet>) -> Result<Chain, RestoreError> {
        if sets.is_empty() {
            return Err(RestoreError::NoDevices);
        }
        let ids: Vec<SetId> = sets.iter().map(|s| s.catalog.set_id).collect();
        let tips: Vec<usize> = (0..sets.len())
            .filter(|&t| {
                let ancestors = &sets[t].catalog.ancestors;
                ids.iter()
                    .enumerate()
                    .all(|(o, id)| o == t || ancestors.contains(id))
            })
            .collect();
        let [tip] = tips[..] else {
            let described: Vec<String> = sets
                .iter()
                .map(|s| {
                    let paths: Vec<String> = s
                        .devices
                        .iter()
                        .map(|(d, _)| d.path().display().to_string())
                        .collect();
                    format!("{} on {}", describe(&s.catalog), paths.join(", "))
                })
                .collect();
            return Err(RestoreError::NotAChain {
                count: sets.len(),
                sets: described,
            });
        };
        sets.swap(0, tip);
        let ancestor_sets = sets[0]
            .catalog
            .ancestors
            .iter()
            .map(|id| sets.iter().position(|s| s.catalog.set_id == *id))
            .collect();
        Ok(Chain {
            sets,
            ancestor_sets,
        })
    }

    pub fn tip(&self) -> &OpenSet {
        &self.sets[0]
    }

    /// Given sets the tip does not need (none of its files' data is there).
    pub fn unused(&self) -> Vec<SetId> {
        let tip = &self.tip().catalog;
        self.sets[1..]
            .iter()
            .map(|s| s.catalog.set_id)
            .filter(|id| {
                let n = tip.ancestors.iter().position(|a| a == id).map(|n| n + 1);
                !tip.files.iter().any(|f| Some(f.origin as usize) == n)
            })
            .collect()
    }
}

/// "set ID (full)" or "set ID (increment 2 of FULL)".
pub fn describe(catalog: &Catalog) -> String {
    match catalog.ancestors.last() {
        None => format!("set {} (full)", catalog.set_id),
        Some(full) => format!(
            "set {} (increment {} of full set {})",
            catalog.set_id,
            catalog.ancestors.len(),
            full
        ),
    }
}

/// Open the devices, group them by set, and order the sets into a chain.
/// With `key`, every set's MACs are checked (`open_sets`).
pub fn open_chain(specs: &[DeviceSpec], key: Option<&MacKey>) -> Result<Chain, RestoreError> {
    Chain::new(super::open_sets(specs, key)?)
}

/// The catalog of an earlier set, for `backup --since`: `path` is a
/// catalog exported with `pbio list --export` (a file that starts with the
/// catalog magic) or any device of the set, as `--dev` names it.
pub fn read_catalog_from(path: &Path) -> Result<Catalog, RestoreError> {
    let invalid = |why: String| RestoreError::Since {
        path: path.to_path_buf(),
        why,
    };
    if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        let mut file = std::fs::File::open(path).map_err(|e| invalid(e.to_string()))?;
        let mut magic = [0u8; 8];
        let starts_with_magic = file.read_exact(&mut magic).is_ok() && magic == CATALOG_MAGIC;
        if starts_with_magic {
            let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
            return Catalog::decode(&bytes)
                .map_err(|e| invalid(format!("not a valid exported catalog: {e}")));
        }
    }
    // A device, opened for reading as `pbio list` does.
    let spec = match path.to_str() {
        Some(text) => DeviceSpec::parse(text).map_err(|e| invalid(e.to_string()))?,
        None => DeviceSpec {
            path: path.to_path_buf(),
            size_bytes: None,
            rate_bytes_per_sec: None,
            early_warning_bytes: None,
            timeout_secs: None,
        },
    };
    let set = super::open_set(std::slice::from_ref(&spec), None)?;
    Ok(set.catalog)
}
