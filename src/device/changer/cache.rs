//! What each cartridge of a library held when pbio last read its label:
//! a HINT that spares loading cartridges, never a fact pbio writes on.
//!
//! A real library cannot read a cartridge in its slot: knowing which sets
//! it holds takes a load into a drive. The cache remembers, per barcode,
//! what the label said the last time (blank, another program's data, or
//! the pbio sets with their filemarks and creation time), so that
//! `restore`/`verify`/`list --changer` load only the cartridges of the set
//! they want, `backup --changer` leaves alone the cartridges it knows hold
//! sets it may not overwrite, and `changer inventory` shows what each
//! cartridge holds without moving it.
//!
//! The rule: an entry only ever makes pbio load a cartridge or leave it
//! alone. Whatever pbio then writes or reads is decided by the label read
//! after the load (a cartridge swapped behind the cache's back is seen
//! then, and its entry replaced); a wrong entry can make pbio skip a
//! scratch cartridge, never overwrite a set.
//!
//! Where: `DIR/vlib.labels` for an emulated library `vlib:DIR`,
//! `$XDG_CACHE_HOME/pbio/changer-<name>.labels` (else
//! `~/.cache/pbio/...`) for a SCSI changer, `<name>` its node with `/`
//! as `_`. One line per cartridge; a line that does not parse is ignored,
//! as is an entry for a barcode the library does not hold.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Status;
use crate::format::SetId;

const HEADER: &str =
    "# pbio changer label cache: a hint, checked against the label read after each load\n";
/// More sets than a tape can hold (media::sets::SETS_PER_TAPE_MAX is far
/// below): a line claiming so is forged.
const SETS_MAX: usize = 1024;
const BARCODE_MAX: usize = 64;

/// One pbio set on a cartridge, as its label said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedSet {
    pub set_id: SetId,
    /// Filemarks in front of its label.
    pub files_before: u32,
    pub created_unix_ns: u64,
    /// Closed (its catalog or a "continued" trailer), not interrupted.
    pub complete: bool,
}

/// What a cartridge held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Blank,
    /// Data that is not a pbio set (or an unreadable label).
    Other,
    Sets(Vec<CachedSet>),
}

impl Seen {
    fn text(&self) -> String {
        match self {
            Seen::Blank => "blank".into(),
            Seen::Other => "other".into(),
            Seen::Sets(sets) => sets
                .iter()
                .map(|s| {
                    format!(
                        "{}:{}:{}:{}",
                        s.set_id,
                        s.files_before,
                        s.created_unix_ns,
                        if s.complete { "complete" } else { "open" }
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    fn parse(words: &[&str]) -> Option<Seen> {
        match words {
            ["blank"] => Some(Seen::Blank),
            ["other"] => Some(Seen::Other),
            [] => None,
            sets if sets.len() <= SETS_MAX => {
                let mut parsed: Vec<CachedSet> = Vec::with_capacity(sets.len());
                for w in sets {
                    let parts: Vec<&str> = w.split(':').collect();
                    let [id, files, created, end] = parts.as_slice() else {
                        return None;
                    };
                    let set = CachedSet {
                        set_id: id.parse().ok()?,
                        files_before: files.parse().ok()?,
                        created_unix_ns: created.parse().ok()?,
                        complete: match *end {
                            "complete" => true,
                            "open" => false,
                            _ => return None,
                        },
                    };
                    // Sets follow each other on the tape: filemarks grow.
                    if parsed
                        .last()
                        .is_some_and(|p| p.files_before >= set.files_before)
                    {
                        return None;
                    }
                    parsed.push(set);
                }
                Some(Seen::Sets(parsed))
            }
            _ => None,
        }
    }

    /// The set `id` on the cartridge, if the entry says it holds it.
    pub fn set(&self, id: SetId) -> Option<&CachedSet> {
        match self {
            Seen::Sets(sets) => sets.iter().find(|s| s.set_id == id),
            _ => None,
        }
    }

    /// Short text for `changer inventory`.
    pub fn summary(&self) -> String {
        match self {
            Seen::Blank => "blank".into(),
            Seen::Other => "not a pbio set".into(),
            Seen::Sets(sets) => sets
                .iter()
                .map(|s| s.set_id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

fn plain_barcode(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= BARCODE_MAX
        && b.bytes().all(|c| c.is_ascii_graphic() && c != b'/')
        && !b.starts_with('#')
}

/// The cache of one library.
#[derive(Clone, Debug, Default)]
pub struct LabelCache {
    /// None: no place to keep it (no cache directory); kept in memory only.
    path: Option<PathBuf>,
    entries: BTreeMap<String, Seen>,
}

impl LabelCache {
    /// Where the cache of the changer named `changer` lives.
    pub fn path_for(changer: &str) -> Option<PathBuf> {
        Self::path_under(
            changer,
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// `path_for` with the environment's XDG_CACHE_HOME and HOME given.
    fn path_under(
        changer: &str,
        xdg_cache_home: Option<std::ffi::OsString>,
        home: Option<std::ffi::OsString>,
    ) -> Option<PathBuf> {
        if let Ok(spec) = super::vlib::LibrarySpec::parse(changer) {
            return Some(spec.dir.join("vlib.labels"));
        }
        let base = xdg_cache_home
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.map(|h| PathBuf::from(h).join(".cache")))?;
        let name: String = changer
            .trim_start_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Some(base.join("pbio").join(format!("changer-{name}.labels")))
    }

    /// The cache of `changer`, keeping only the entries of cartridges that
    /// `status` shows in the library (an entry of a barcode that left is
    /// stale). A missing or unreadable file is an empty cache.
    pub fn load(changer: &str, status: &Status) -> LabelCache {
        let mut cache = Self::load_unchecked(changer);
        let present: Vec<&str> = status
            .slots
            .iter()
            .filter_map(|s| s.barcode.as_deref())
            .chain(status.drives.iter().filter_map(|d| d.barcode.as_deref()))
            .collect();
        cache.entries.retain(|b, _| present.contains(&b.as_str()));
        cache
    }

    /// The cache of `changer` as the file has it (no library status at
    /// hand: entries of cartridges that left are kept).
    pub fn load_unchecked(changer: &str) -> LabelCache {
        let path = Self::path_for(changer);
        let text = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let mut cache = Self::parse(&text);
        cache.path = path;
        cache
    }

    fn parse(text: &str) -> LabelCache {
        let mut entries = BTreeMap::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some((barcode, rest)) = words.split_first() else {
                continue;
            };
            if !plain_barcode(barcode) {
                continue;
            }
            if let Some(seen) = Seen::parse(rest) {
                entries.insert(barcode.to_string(), seen);
            }
        }
        LabelCache {
            path: None,
            entries,
        }
    }

    fn text(&self) -> String {
        let mut t = String::from(HEADER);
        for (b, seen) in &self.entries {
            t += &format!("{b} {}\n", seen.text());
        }
        t
    }

    pub fn get(&self, barcode: &str) -> Option<&Seen> {
        self.entries.get(barcode)
    }

    /// What the label of `barcode` said when it was just read; returns
    /// whether the cache said the same.
    pub fn observed(&mut self, barcode: &str, seen: Seen) -> bool {
        if !plain_barcode(barcode) {
            return false;
        }
        self.entries.insert(barcode.to_string(), seen.clone()) == Some(seen)
    }

    /// Forget what the cache said of `barcode` (it was found wrong, or the
    /// cartridge is being written).
    pub fn forget(&mut self, barcode: &str) {
        self.entries.remove(barcode);
    }

    /// Write the cache back (atomically: another pbio reading it sees the
    /// old or the new one). Best effort for the callers: a cache that
    /// cannot be written only costs loads next time.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("new{}", std::process::id()));
        std::fs::write(&tmp, self.text())?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::changer::Slot;

    fn id(n: u8) -> SetId {
        SetId([n; SetId::BYTES])
    }

    fn status(barcodes: &[&str]) -> Status {
        Status {
            description: String::new(),
            slots: barcodes
                .iter()
                .enumerate()
                .map(|(i, b)| Slot {
                    number: i as u32 + 1,
                    full: true,
                    barcode: Some(b.to_string()),
                    import_export: false,
                })
                .collect(),
            drives: Vec::new(),
        }
    }

    fn two_sets() -> Seen {
        Seen::Sets(vec![
            CachedSet {
                set_id: id(1),
                files_before: 0,
                created_unix_ns: 10,
                complete: true,
            },
            CachedSet {
                set_id: id(2),
                files_before: 3,
                created_unix_ns: 20,
                complete: false,
            },
        ])
    }

    #[test]
    fn entries_round_trip_through_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let changer = format!("vlib:{}", tmp.path().display());
        let st = status(&["A1", "B2", "C3"]);
        let mut cache = LabelCache::load(&changer, &st);
        assert!(cache.get("A1").is_none());
        assert!(!cache.observed("A1", two_sets()), "new");
        assert!(cache.observed("A1", two_sets()), "the same again");
        cache.observed("B2", Seen::Blank);
        cache.observed("C3", Seen::Other);
        cache.save().unwrap();
        assert!(tmp.path().join("vlib.labels").is_file());
        let again = LabelCache::load(&changer, &st);
        assert_eq!(again.get("A1"), Some(&two_sets()));
        assert_eq!(again.get("B2"), Some(&Seen::Blank));
        assert_eq!(again.get("C3"), Some(&Seen::Other));
        assert_eq!(again.get("A1").unwrap().set(id(2)).unwrap().files_before, 3);
        assert!(again.get("B2").unwrap().set(id(2)).is_none());
    }

    #[test]
    fn stale_and_forged_entries_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let changer = format!("vlib:{}", tmp.path().display());
        let good = format!("{}:0:5:complete", id(1));
        let text = [
            HEADER.trim_end().to_string(),
            format!("A1 {good}"),
            // The cartridge left the library: stale.
            format!("GONE {good}"),
            // Forged or damaged lines.
            format!("B2 {}:0:5:maybe", id(1)),
            "C3 nothex:0:5:complete".to_string(),
            format!("D4 {}:x:5:complete", id(1)),
            format!("E5 {good} {}:0:6:complete", id(2)),
            format!("../F6 {good}"),
            "G7".to_string(),
            format!("H8 {}:0:5", id(1)),
            "I9 blank extra".to_string(),
        ]
        .join("\n");
        std::fs::write(tmp.path().join("vlib.labels"), text).unwrap();
        let st = status(&["A1", "B2", "C3", "D4", "E5", "G7", "H8", "I9"]);
        let mut cache = LabelCache::load(&changer, &st);
        assert!(cache.get("A1").is_some());
        for b in ["GONE", "B2", "C3", "D4", "E5", "../F6", "G7", "H8", "I9"] {
            assert!(cache.get(b).is_none(), "{b} taken from a bad line");
        }
        // A wrong entry is replaced by what the label says.
        assert!(!cache.observed("A1", Seen::Blank));
        assert_eq!(cache.get("A1"), Some(&Seen::Blank));
        cache.forget("A1");
        assert!(cache.get("A1").is_none());
        assert!(!cache.observed("../x", Seen::Blank), "not a plain barcode");
        assert!(cache.get("../x").is_none());
    }

    #[test]
    fn a_scsi_changer_caches_under_xdg_cache_home() {
        let under = |xdg: Option<&str>, home: Option<&str>| {
            LabelCache::path_under("/dev/sg5", xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(
            under(Some("/c"), Some("/h")).unwrap(),
            PathBuf::from("/c/pbio/changer-dev_sg5.labels")
        );
        assert_eq!(
            under(Some(""), Some("/h")).unwrap(),
            PathBuf::from("/h/.cache/pbio/changer-dev_sg5.labels")
        );
        assert_eq!(under(None, None), None);
        assert_eq!(
            LabelCache::path_for("vlib:/srv/lib,inplace=0").unwrap(),
            PathBuf::from("/srv/lib/vlib.labels")
        );
    }
}
