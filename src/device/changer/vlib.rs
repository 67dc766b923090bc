//! `vlib:DIR[,slots=N][,drives=D][,size=S][,ew=E][,move_ms=T][,inplace=0][,rate=R]`:
//! an emulated tape library, created on first use (`size=` is then
//! required, the cartridges' length, as for `vtape:`). `inplace=0` makes it
//! a real library in one more way: a cartridge's label is read only
//! through a drive it is loaded in (`cartridge_in_slot` is None); the
//! setting is kept in `vlib.state` until given again. `rate=R` (bytes a
//! second, with units: `rate=20M`) makes the drives as slow as real ones
//! for this run (the drives' `vtape:` `rate=`; not kept).
//!
//! DIR holds:
//! - `vlib.state`: which cartridge is in which slot and drive (and which
//!   slot a loaded cartridge came from) and how many loads it did,
//!   rewritten atomically after every move;
//! - `cartridges/BARCODE/`: each cartridge in a slot, an emulated tape
//!   (`vtape:` directory) with its barcode in `vlib.barcode`; barcodes are
//!   `PB0001L6`, `PB0002L6`, ... in slot order;
//! - `driveN`: the drive's tape, `vtape:DIR/driveN` to backup, restore and
//!   the rest. A load renames the cartridge's directory there, an unload
//!   renames it back; an empty drive is a small file saying so, so that
//!   `--dev vtape:DIR/driveN` on an empty drive is refused ("is not a
//!   directory") instead of creating a tape that is in no slot.
//!
//! It behaves like a real library: a cartridge is in one slot or one
//! drive, a move takes `move_ms` (default 100 ms), loading a drive that
//! holds a cartridge or from an empty slot fails naming the element. One
//! move at a time: every operation holds an exclusive lock (`vlib.lock`).
//! A move interrupted between the rename and the state's rewrite is
//! finished on the next use (the cartridges' `vlib.barcode` say where they
//! are); anything else that does not match is named, not guessed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::{Changer, ChangerError, Drive, Slot, Status};
use crate::device::{vtape, DeviceSpec, Mode};
use crate::units::parse_size;

pub const PREFIX: &str = "vlib:";
const STATE: &str = "vlib.state";
const LOCK: &str = "vlib.lock";
const CARTRIDGES: &str = "cartridges";
/// Inside a cartridge's directory: its barcode.
const BARCODE: &str = "vlib.barcode";
pub const SLOTS_DEFAULT: u32 = 8;
pub const DRIVES_DEFAULT: u32 = 2;
pub const MOVE_MS_DEFAULT: u64 = 100;
/// Limits that keep a typo from creating a million directories.
pub const SLOTS_MAX: u32 = 10_000;
pub const DRIVES_MAX: u32 = 256;

/// The barcode of the cartridge created in `slot`.
pub fn barcode(slot: u32) -> String {
    format!("PB{slot:04}L6")
}

/// `vlib:DIR[,...]` as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibrarySpec {
    pub dir: PathBuf,
    pub slots: Option<u32>,
    pub drives: Option<u32>,
    pub size_bytes: Option<u64>,
    pub early_warning_bytes: Option<u64>,
    pub move_ms: Option<u64>,
    /// `inplace=0|1`: whether a cartridge can be read in its slot.
    pub inplace: Option<bool>,
    /// `rate=R`: the drives' speed, bytes a second (this run only).
    pub rate_bytes_per_sec: Option<u64>,
}

impl LibrarySpec {
    pub fn parse(text: &str) -> Result<LibrarySpec, String> {
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("'{text}' is not vlib:DIR"))?;
        let mut parts = rest.split(',');
        let dir = parts.next().unwrap_or_default();
        if dir.is_empty() {
            return Err(format!("'{text}': vlib: needs a directory (vlib:DIR)"));
        }
        let mut spec = LibrarySpec {
            dir: PathBuf::from(dir),
            slots: None,
            drives: None,
            size_bytes: None,
            early_warning_bytes: None,
            move_ms: None,
            inplace: None,
            rate_bytes_per_sec: None,
        };
        for option in parts {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("'{text}': option '{option}' is not key=value"))?;
            let number = |max: u32| {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| format!("'{text}': {key}= is a number from 1 to {max}"))
            };
            match key {
                "slots" => spec.slots = Some(number(SLOTS_MAX)?),
                "drives" => spec.drives = Some(number(DRIVES_MAX)?),
                "size" => {
                    spec.size_bytes =
                        Some(parse_size(value).map_err(|e| format!("'{text}': size: {e}"))?)
                }
                "ew" => {
                    spec.early_warning_bytes =
                        Some(parse_size(value).map_err(|e| format!("'{text}': ew: {e}"))?)
                }
                "move_ms" => {
                    spec.move_ms =
                        Some(value.parse().map_err(|_| {
                            format!("'{text}': move_ms= is a number of milliseconds")
                        })?)
                }
                "rate" => {
                    let rate = parse_size(value).map_err(|e| format!("'{text}': rate: {e}"))?;
                    spec.rate_bytes_per_sec = Some(rate.max(1));
                }
                "inplace" => {
                    spec.inplace = Some(match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(format!("'{text}': inplace= is 0 or 1")),
                    })
                }
                _ => {
                    return Err(format!(
                        "'{text}': unknown option '{key}' (known: slots, drives, size, ew, move_ms, inplace, rate)"
                    ))
                }
            }
        }
        Ok(spec)
    }
}

/// What `vlib.state` records.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    move_ms: u64,
    /// Cartridges can be read in their slots (`inplace=1`, the default).
    inplace: bool,
    /// Loads since the library was created (as a real library counts its
    /// moves).
    loads: u64,
    /// Barcode in each slot (index: slot - 1).
    slots: Vec<Option<String>>,
    /// Barcode and source slot in each drive.
    drives: Vec<Option<(String, u32)>>,
}

impl State {
    fn text(&self) -> String {
        let mut t = String::from("# pbio emulated library (vlib:): which cartridge is where\n");
        t += &format!("move_ms {}\n", self.move_ms);
        if !self.inplace {
            t += "inplace 0\n";
        }
        if self.loads > 0 {
            t += &format!("loads {}\n", self.loads);
        }
        for (i, s) in self.slots.iter().enumerate() {
            t += &format!("slot {} {}\n", i + 1, s.as_deref().unwrap_or("-"));
        }
        for (i, d) in self.drives.iter().enumerate() {
            match d {
                Some((b, from)) => t += &format!("drive {i} {b} {from}\n"),
                None => t += &format!("drive {i} -\n"),
            }
        }
        t
    }

    fn parse(text: &str) -> Result<State, String> {
        let mut st = State {
            move_ms: MOVE_MS_DEFAULT,
            inplace: true,
            loads: 0,
            slots: Vec::new(),
            drives: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            let bad = || format!("line {}: '{line}'", n + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            let barcode = |w: &str| (w != "-").then(|| w.to_string());
            let index = |w: &str, expected: usize| {
                w.parse::<usize>()
                    .ok()
                    .filter(|&i| i == expected)
                    .ok_or_else(bad)
            };
            match words.as_slice() {
                [] => {}
                [c, ..] if c.starts_with('#') => {}
                ["move_ms", ms] => st.move_ms = ms.parse().map_err(|_| bad())?,
                ["inplace", "0"] => st.inplace = false,
                ["inplace", "1"] => st.inplace = true,
                ["loads", n] => st.loads = n.parse().map_err(|_| bad())?,
                ["slot", i, b] => {
                    index(i, st.slots.len() + 1)?;
                    st.slots.push(barcode(b));
                }
                ["drive", i, "-"] => {
                    index(i, st.drives.len())?;
                    st.drives.push(None);
                }
                ["drive", i, b, from] => {
                    index(i, st.drives.len())?;
                    let from: u32 = from.parse().map_err(|_| bad())?;
                    st.drives.push(Some((b.to_string(), from)));
                }
                _ => return Err(bad()),
            }
        }
        if st.slots.is_empty() || st.drives.is_empty() {
            return Err("no slots or no drives".into());
        }
        let mut seen = std::collections::HashSet::new();
        let all = st
            .slots
            .iter()
            .flatten()
            .chain(st.drives.iter().flatten().map(|(b, _)| b));
        for b in all {
            if !seen.insert(b.clone()) || b.contains('/') || b.starts_with('.') {
                return Err(format!("cartridge '{b}' listed twice or not a plain name"));
            }
        }
        Ok(st)
    }
}

pub struct VirtualLibrary {
    dir: PathBuf,
    name: String,
    /// The drives' speed (`rate=`), for the `vtape:` specs of the drives.
    rate: Option<u64>,
}

impl VirtualLibrary {
    /// Open `vlib:DIR[,...]`, creating the library on first use.
    pub fn open(text: &str) -> Result<VirtualLibrary, ChangerError> {
        let spec = LibrarySpec::parse(text).map_err(|why| ChangerError::Refused {
            changer: text.to_string(),
            why,
        })?;
        let lib = VirtualLibrary {
            name: format!("{PREFIX}{}", spec.dir.display()),
            dir: spec.dir.clone(),
            rate: spec.rate_bytes_per_sec,
        };
        if lib.dir.exists() && !lib.dir.is_dir() {
            return Err(lib.refused("is not a directory"));
        }
        let _lock = lib.lock()?;
        if lib.dir.join(STATE).exists() {
            let st = lib.read_state()?;
            let (slots, drives) = (st.slots.len() as u32, st.drives.len() as u32);
            if spec.slots.is_some_and(|n| n != slots) || spec.drives.is_some_and(|n| n != drives) {
                return Err(lib.refused(format!(
                    "exists with {slots} slots and {drives} drives (leave out slots= and drives=, or give another directory)"
                )));
            }
            if spec.size_bytes.is_some() || spec.early_warning_bytes.is_some() {
                return Err(lib.refused(
                    "exists already: its cartridges keep their size (leave out size= and ew=)",
                ));
            }
            let move_ms = spec.move_ms.unwrap_or(st.move_ms);
            let inplace = spec.inplace.unwrap_or(st.inplace);
            if (move_ms, inplace) != (st.move_ms, st.inplace) {
                lib.write_state(&State {
                    move_ms,
                    inplace,
                    ..st
                })?;
            }
            return Ok(lib);
        }
        lib.create(&spec)?;
        Ok(lib)
    }

    fn refused(&self, why: impl Into<String>) -> ChangerError {
        ChangerError::Refused {
            changer: self.name.clone(),
            why: why.into(),
        }
    }

    fn unusable(&self, why: impl Into<String>) -> ChangerError {
        ChangerError::Unusable {
            changer: self.name.clone(),
            why: why.into(),
        }
    }

    fn io(&self, what: String, error: std::io::Error) -> ChangerError {
        ChangerError::Io {
            changer: self.name.clone(),
            what,
            error,
        }
    }

    fn create(&self, spec: &LibrarySpec) -> Result<(), ChangerError> {
        let Some(size) = spec.size_bytes else {
            return Err(self.refused(
                "no emulated library there (give ,size=N, the cartridges' length, to create one)",
            ));
        };
        let slots = spec.slots.unwrap_or(SLOTS_DEFAULT);
        let drives = spec.drives.unwrap_or(DRIVES_DEFAULT);
        let cartridges = self.dir.join(CARTRIDGES);
        std::fs::create_dir_all(&cartridges)
            .map_err(|e| self.io(format!("create {}", cartridges.display()), e))?;
        for slot in 1..=slots {
            let b = barcode(slot);
            let path = cartridges.join(&b);
            let mut text = format!("{}{},size={size}", vtape::PREFIX, path.display());
            if let Some(ew) = spec.early_warning_bytes {
                text += &format!(",ew={ew}");
            }
            let tape_spec = DeviceSpec::parse(&text).map_err(|why| self.refused(why))?;
            vtape::VirtualTape::open(&tape_spec, Mode::Write)
                .map_err(|e| self.refused(format!("cartridge {b}: {e}")))?;
            std::fs::write(path.join(BARCODE), format!("{b}\n"))
                .map_err(|e| self.io(format!("write {}", path.join(BARCODE).display()), e))?;
        }
        for drive in 0..drives {
            self.mark_empty(drive)?;
        }
        self.write_state(&State {
            move_ms: spec.move_ms.unwrap_or(MOVE_MS_DEFAULT),
            inplace: spec.inplace.unwrap_or(true),
            loads: 0,
            slots: (1..=slots).map(|s| Some(barcode(s))).collect(),
            drives: vec![None; drives as usize],
        })
    }

    fn drive_path(&self, drive: u32) -> PathBuf {
        self.dir.join(format!("drive{drive}"))
    }

    fn cartridge_path(&self, barcode: &str) -> PathBuf {
        self.dir.join(CARTRIDGES).join(barcode)
    }

    /// The file an empty drive is.
    fn mark_empty(&self, drive: u32) -> Result<(), ChangerError> {
        let path = self.drive_path(drive);
        let text = format!(
            "drive {drive} of the emulated library {}: empty (pbio changer load SLOT {drive} --changer {})\n",
            self.dir.display(),
            self.name
        );
        std::fs::write(&path, text).map_err(|e| self.io(format!("write {}", path.display()), e))
    }

    fn lock(&self) -> Result<Flock<File>, ChangerError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| self.io(format!("create {}", self.dir.display()), e))?;
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io(format!("open {}", path.display()), e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| self.io(format!("lock {}", path.display()), errno.into()))
    }

    fn read_state(&self) -> Result<State, ChangerError> {
        let path = self.dir.join(STATE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| self.io(format!("read {}", path.display()), e))?;
        let parsed = State::parse(&text)
            .map_err(|why| self.unusable(format!("{STATE} is damaged: {why}")))?;
        let st = self.recover(&parsed)?;
        if st != parsed {
            self.write_state(&st)?;
        }
        // Every cartridge where the state says it is.
        for (i, b) in st.slots.iter().enumerate() {
            if let Some(b) = b {
                self.check_cartridge(&self.cartridge_path(b), b, &format!("slot {}", i + 1))?;
            }
        }
        for (i, d) in st.drives.iter().enumerate() {
            if let Some((b, _)) = d {
                self.check_cartridge(&self.drive_path(i as u32), b, &format!("drive {i}"))?;
            }
        }
        Ok(st)
    }

    /// Whether the cartridge directory at `path` holds `barcode`.
    fn holds(path: &Path, barcode: &str) -> bool {
        std::fs::read_to_string(path.join(BARCODE)).is_ok_and(|b| b.trim() == barcode)
    }

    /// Finish a move that was interrupted (a crash between the rename and
    /// the state's rewrite): a cartridge the state puts in a slot but that
    /// is in an empty drive was loaded; one the state puts in a drive but
    /// that is back among the slots' cartridges was unloaded. An empty
    /// drive without its file gets it back.
    fn recover(&self, st: &State) -> Result<State, ChangerError> {
        let mut fixed = st.clone();
        for i in 0..fixed.slots.len() {
            let Some(b) = fixed.slots[i].clone() else {
                continue;
            };
            if Self::holds(&self.cartridge_path(&b), &b) {
                continue;
            }
            let drive = (0..fixed.drives.len()).find(|&n| {
                fixed.drives[n].is_none() && Self::holds(&self.drive_path(n as u32), &b)
            });
            if let Some(n) = drive {
                fixed.slots[i] = None;
                fixed.drives[n] = Some((b, i as u32 + 1));
            }
        }
        for n in 0..fixed.drives.len() {
            let Some((b, from)) = fixed.drives[n].clone() else {
                continue;
            };
            if Self::holds(&self.drive_path(n as u32), &b)
                || !Self::holds(&self.cartridge_path(&b), &b)
            {
                continue;
            }
            let source = from
                .checked_sub(1)
                .map(|i| i as usize)
                .filter(|&i| fixed.slots.get(i).is_some_and(Option::is_none));
            if let Some(i) = source.or_else(|| fixed.slots.iter().position(Option::is_none)) {
                fixed.drives[n] = None;
                fixed.slots[i] = Some(b);
            }
        }
        for n in 0..fixed.drives.len() {
            let path = self.drive_path(n as u32);
            if fixed.drives[n].is_none() && !path.is_file() && !path.is_dir() {
                self.mark_empty(n as u32)?;
            }
        }
        Ok(fixed)
    }

    fn check_cartridge(
        &self,
        path: &Path,
        barcode: &str,
        element: &str,
    ) -> Result<(), ChangerError> {
        let found = std::fs::read_to_string(path.join(BARCODE)).unwrap_or_default();
        if found.trim() != barcode {
            return Err(self.unusable(format!(
                "{element} should hold cartridge {barcode}, but {} {}",
                path.display(),
                if found.is_empty() {
                    "holds no cartridge".to_string()
                } else {
                    format!("holds {}", found.trim())
                }
            )));
        }
        Ok(())
    }

    fn write_state(&self, st: &State) -> Result<(), ChangerError> {
        let path = self.dir.join(STATE);
        let tmp = self.dir.join(format!("{STATE}.new"));
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, st.text())?;
            File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| self.io(format!("write {}", path.display()), e))
    }

    fn status_of(&self, st: &State) -> Status {
        Status {
            description: format!("emulated library {}", self.dir.display()),
            slots: st
                .slots
                .iter()
                .enumerate()
                .map(|(i, b)| Slot {
                    number: i as u32 + 1,
                    full: b.is_some(),
                    barcode: b.clone(),
                    import_export: false,
                })
                .collect(),
            drives: st
                .drives
                .iter()
                .enumerate()
                .map(|(i, d)| Drive {
                    number: i as u32,
                    full: d.is_some(),
                    barcode: d.as_ref().map(|(b, _)| b.clone()),
                    source_slot: d.as_ref().map(|&(_, from)| from),
                    serial: Some(format!("VLIB{i:06}")),
                    device: DeviceSpec::parse(&format!(
                        "{}{}{}",
                        vtape::PREFIX,
                        self.drive_path(i as u32).display(),
                        self.rate.map(|r| format!(",rate={r}")).unwrap_or_default()
                    ))
                    .ok(),
                })
                .collect(),
        }
    }

    /// Rename a cartridge's directory, after the robot's travel time.
    fn travel(&self, st: &State, from: &Path, to: &Path) -> Result<(), ChangerError> {
        std::thread::sleep(Duration::from_millis(st.move_ms));
        if to.is_file() {
            std::fs::remove_file(to).map_err(|e| self.io(format!("remove {}", to.display()), e))?;
        }
        std::fs::rename(from, to)
            .map_err(|e| self.io(format!("move {} to {}", from.display(), to.display()), e))
    }
}

impl Changer for VirtualLibrary {
    fn name(&self) -> &str {
        &self.name
    }

    fn status(&mut self) -> Result<Status, ChangerError> {
        let _lock = self.lock()?;
        Ok(self.status_of(&self.read_state()?))
    }

    fn inventory(&mut self) -> Result<Status, ChangerError> {
        self.status()
    }

    fn load(&mut self, slot: u32, drive: u32) -> Result<(), ChangerError> {
        let _lock = self.lock()?;
        let mut st = self.read_state()?;
        self.status_of(&st).check_load(&self.name, slot, drive)?;
        let b = st.slots[slot as usize - 1].take().expect("checked full");
        self.travel(&st, &self.cartridge_path(&b), &self.drive_path(drive))?;
        st.drives[drive as usize] = Some((b, slot));
        st.loads += 1;
        self.write_state(&st)
    }

    fn unload(&mut self, drive: u32) -> Result<u32, ChangerError> {
        let _lock = self.lock()?;
        let mut st = self.read_state()?;
        let slot = self.status_of(&st).unload_target(&self.name, drive)?;
        let (b, _) = st.drives[drive as usize].take().expect("checked full");
        self.travel(&st, &self.drive_path(drive), &self.cartridge_path(&b))?;
        self.mark_empty(drive)?;
        st.slots[slot as usize - 1] = Some(b);
        self.write_state(&st)?;
        Ok(slot)
    }

    fn cartridge_in_slot(&self, slot: u32) -> Option<DeviceSpec> {
        let _lock = self.lock().ok()?;
        let st = self.read_state().ok()?;
        if !st.inplace {
            return None;
        }
        let b = st.slots.get(slot.checked_sub(1)? as usize)?.clone()?;
        DeviceSpec::parse(&format!(
            "{}{}",
            vtape::PREFIX,
            self.cartridge_path(&b).display()
        ))
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{read_block, write_block};

    fn lib(dir: &Path, opts: &str) -> VirtualLibrary {
        VirtualLibrary::open(&format!("vlib:{}{opts}", dir.display())).unwrap()
    }

    #[test]
    fn spec_and_state_text() {
        let s = LibrarySpec::parse("vlib:/x,slots=6,drives=2,size=64M,move_ms=0").unwrap();
        assert_eq!(
            (s.slots, s.drives, s.size_bytes, s.move_ms),
            (Some(6), Some(2), Some(64 << 20), Some(0))
        );
        assert!(LibrarySpec::parse("vlib:").is_err());
        assert!(LibrarySpec::parse("vlib:/x,slots=0").is_err());
        assert!(LibrarySpec::parse("vlib:/x,drives=300").is_err());
        assert!(LibrarySpec::parse("vlib:/x,speed=1").is_err());
        let s = LibrarySpec::parse("vlib:/x,inplace=0").unwrap();
        assert_eq!(s.inplace, Some(false));
        assert!(LibrarySpec::parse("vlib:/x,inplace=no").is_err());
        let s = LibrarySpec::parse("vlib:/x,rate=20M").unwrap();
        assert_eq!(s.rate_bytes_per_sec, Some(20 << 20));
        assert!(LibrarySpec::parse("vlib:/x,rate=fast").is_err());
        let st = State {
            move_ms: 5,
            inplace: false,
            loads: 3,
            slots: vec![Some("A".into()), None],
            drives: vec![Some(("B".into(), 2)), None],
        };
        assert_eq!(State::parse(&st.text()).unwrap(), st);
        assert!(
            State::parse("slot 1 A\nslot 2 A\ndrive 0 -\n").is_err(),
            "twice"
        );
        assert!(
            State::parse("slot 2 A\ndrive 0 -\n").is_err(),
            "out of order"
        );
        assert!(State::parse("slot 1 ../x\ndrive 0 -\n").is_err());
    }

    #[test]
    fn a_library_moves_cartridges_like_a_real_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lib");
        let e = VirtualLibrary::open(&format!("vlib:{}", dir.display()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("give ,size=N"), "{e}");
        let mut l = lib(&dir, ",slots=4,drives=2,size=1M,move_ms=20");
        let s = l.status().unwrap();
        assert_eq!((s.slots.len(), s.drives.len(), s.cartridges()), (4, 2, 4));
        assert_eq!(s.slots[0].barcode.as_deref(), Some("PB0001L6"));
        // rate=: the drives are as slow as that, this run only.
        let slow = lib(&dir, ",rate=8M").status().unwrap();
        let spec = slow.drives[1].device.clone().unwrap();
        assert_eq!(spec.rate_bytes_per_sec, Some(8 << 20));
        assert_eq!(s.drives[1].device.clone().unwrap().rate_bytes_per_sec, None);
        // An empty drive is no tape: its vtape: name is refused, not created.
        let drive0 = s.drives[0].device.clone().unwrap();
        assert!(crate::device::open(&drive0, Mode::Write).is_err());

        let started = std::time::Instant::now();
        l.load(2, 0).unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "a move takes time"
        );
        let s = l.status().unwrap();
        assert!(!s.slots[1].full);
        assert_eq!(s.drives[0].barcode.as_deref(), Some("PB0002L6"));
        assert_eq!(s.drives[0].source_slot, Some(2));

        // The drive's tape is the cartridge: what is written there comes back with it.
        {
            let tape = crate::device::open(&drive0, Mode::Write).unwrap();
            write_block(tape.as_ref(), &[7u8; 4096]).unwrap();
            tape.sync().unwrap();
        }
        let e = l.load(1, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "changer {}: drive 0 already holds a cartridge (PB0002L6); unload it first",
                l.name()
            )
        );
        let e = l.load(2, 1).unwrap_err();
        assert!(e.to_string().ends_with("slot 2 is empty"), "{e}");
        assert!(matches!(l.load(5, 1), Err(ChangerError::NoSuchSlot { .. })));
        assert!(matches!(l.unload(1), Err(ChangerError::DriveEmpty { .. })));

        // Reopened (another process): the same state; unload to the source slot.
        let mut l = lib(&dir, "");
        assert_eq!(l.unload(0).unwrap(), 2);
        let s = l.status().unwrap();
        assert_eq!(s.slots[1].barcode.as_deref(), Some("PB0002L6"));
        assert!(!s.drives[0].full);
        let in_slot = l.cartridge_in_slot(2).unwrap();
        let tape = crate::device::open(&in_slot, Mode::Read).unwrap();
        let mut buf = vec![0u8; 8192];
        assert_eq!(read_block(tape.as_ref(), &mut buf).unwrap(), 4096);
        assert!(crate::device::open(&drive0, Mode::Read).is_err());

        // Other options than the library has: refused.
        let e = VirtualLibrary::open(&format!("vlib:{},slots=5", dir.display()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("4 slots and 2 drives"), "{e}");
        // A move interrupted after the cartridge moved but before the
        // state was rewritten is finished on the next use: a load...
        let before = std::fs::read(dir.join(STATE)).unwrap();
        l.load(4, 1).unwrap();
        std::fs::write(dir.join(STATE), &before).unwrap();
        let s = l.status().unwrap();
        assert_eq!(s.drives[1].barcode.as_deref(), Some("PB0004L6"));
        assert_eq!(s.drives[1].source_slot, Some(4));
        assert!(!s.slots[3].full);
        // ... and an unload (the drive's file not yet back either).
        std::fs::rename(dir.join("drive1"), dir.join("cartridges/PB0004L6")).unwrap();
        let s = l.status().unwrap();
        assert_eq!(s.slots[3].barcode.as_deref(), Some("PB0004L6"));
        assert!(!s.drives[1].full);
        assert!(dir.join("drive1").is_file());
        assert_eq!(s.cartridges(), 4);
        // inplace=0: no cartridge is read where it is, until inplace=1.
        assert!(lib(&dir, ",inplace=0").cartridge_in_slot(2).is_none());
        assert!(lib(&dir, "").cartridge_in_slot(2).is_none(), "kept");
        assert!(lib(&dir, ",inplace=1").cartridge_in_slot(2).is_some());
        // Damage is named.
        std::fs::rename(dir.join("cartridges/PB0003L6"), dir.join("elsewhere")).unwrap();
        let e = l.status().unwrap_err();
        assert!(
            e.to_string()
                .contains("slot 3 should hold cartridge PB0003L6"),
            "{e}"
        );
    }
}
