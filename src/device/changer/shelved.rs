//! A cartridge of a library read through whichever drive is free: restore,
//! verify and list with `--changer` see each cartridge as a device
//! (`Shelved`) that is attached before it is read (a free drive taken, the
//! cartridge loaded, the drive opened) and detached after (the drive
//! closed, the drive given back with the cartridge still in it). A
//! cartridge attached again while still in a drive is not loaded again;
//! a drive holding a cartridge nobody reads is emptied only when another
//! cartridge needs it, and every drive when the pool goes. A drive that
//! holds a cartridge a reader waits for is left to that reader (the
//! readers of a restore all ask at once: the cartridge the labels' pass
//! left in the drive is read first, not unloaded and loaded again). With fewer
//! drives than cartridges, readers wait for a drive: every drive stays
//! busy and one drive reads any set.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Changer, ChangerError};
use crate::device::{
    self, Access, BlockDone, BlockIo, Device, DeviceSpec, ErrorClass, Kind, Mode, TapeOp,
    TapeStatus,
};

/// The drives cartridges are read through, and the robot that loads them.
pub struct DrivePool {
    changer: Mutex<Box<dyn Changer>>,
    free: Mutex<FreeDrives>,
    freed: Condvar,
    /// Loads done through the pool.
    loads: Mutex<u32>,
}

/// The drives nobody reads through: empty ones, and those still holding
/// the cartridge last read (its slot), longest unused first.
struct FreeDrives {
    empty: Vec<(u32, DeviceSpec)>,
    idle: Vec<(u32, (u32, DeviceSpec))>,
    /// The slots of the cartridges readers wait for (one entry a reader).
    waiting: Vec<u32>,
}

/// How long a reader that would unload a cartridge to load its own first
/// waits for a reader of that cartridge to ask for it (readers started
/// together ask within microseconds; a move takes seconds).
const OTHERS_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// What a drive taken for a cartridge holds.
enum Taken {
    /// That cartridge already.
    It,
    Nothing,
    /// Another cartridge, to unload first.
    Other,
}

impl DrivePool {
    /// `drives`: (drive number, its device), all empty.
    pub fn new(changer: Box<dyn Changer>, drives: Vec<(u32, DeviceSpec)>) -> Arc<DrivePool> {
        assert!(!drives.is_empty());
        Arc::new(DrivePool {
            changer: Mutex::new(changer),
            free: Mutex::new(FreeDrives {
                empty: drives,
                idle: Vec::new(),
                waiting: Vec::new(),
            }),
            freed: Condvar::new(),
            loads: Mutex::new(0),
        })
    }

    pub fn loads(&self) -> u32 {
        *self.loads.lock().expect("no panic")
    }

    fn changer(&self) -> MutexGuard<'_, Box<dyn Changer>> {
        self.changer.lock().expect("no changer user panicked")
    }

    /// Wait for a drive for the cartridge in `slot`: the one it is still
    /// in, else an empty one, else the one idle longest whose cartridge
    /// no reader waits for (after a grace for such readers to ask).
    fn take(&self, slot: u32) -> ((u32, DeviceSpec), Taken) {
        let mut free = self.free.lock().expect("no panic");
        free.waiting.push(slot);
        let mut graced = false;
        let taken = loop {
            if let Some(i) = free.idle.iter().position(|(s, _)| *s == slot) {
                break (free.idle.remove(i).1, Taken::It);
            }
            if let Some(drive) = free.empty.pop() {
                break (drive, Taken::Nothing);
            }
            if !free.idle.is_empty() && !graced {
                graced = true;
                free = self
                    .freed
                    .wait_timeout(free, OTHERS_GRACE)
                    .expect("no panic")
                    .0;
                continue;
            }
            let unwanted = free
                .idle
                .iter()
                .position(|(s, _)| !free.waiting.contains(s));
            if let Some(i) = unwanted {
                break (free.idle.remove(i).1, Taken::Other);
            }
            free = self.freed.wait(free).expect("no panic");
        };
        let me = free
            .waiting
            .iter()
            .position(|s| *s == slot)
            .expect("registered above");
        free.waiting.swap_remove(me);
        taken
    }

    /// A drive back, empty (`slot` None) or still holding `slot`'s cartridge.
    fn give_back(&self, drive: (u32, DeviceSpec), slot: Option<u32>) {
        let mut free = self.free.lock().expect("no panic");
        match slot {
            Some(slot) => free.idle.push((slot, drive)),
            None => free.empty.push(drive),
        }
        self.freed.notify_all();
    }
}

impl Drop for DrivePool {
    /// Every cartridge back to its slot (best effort: a library that
    /// cannot is reported by the next `changer status`).
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.free.get_mut().expect("no panic").idle);
        let changer = self.changer.get_mut().expect("no panic");
        for (_, (drive, _)) in idle {
            let _ = changer.unload(drive);
        }
    }
}

/// The drive a cartridge is in (number, device) and that drive opened.
type InDrive = ((u32, DeviceSpec), Box<dyn Device>);

/// What a cartridge chosen from a hint (the label cache) must turn out to
/// hold once loaded: Err(why not) refuses it, and it is unloaded again.
pub type Expectation = Box<dyn Fn(&dyn Device) -> Result<(), String> + Send + Sync>;

/// A cartridge in a slot, read through the pool's drives.
pub struct Shelved {
    pool: Arc<DrivePool>,
    slot: u32,
    /// "CHANGER slot N (BARCODE)": what messages name it by.
    name: PathBuf,
    /// The drive it is in and the drive opened, while attached.
    loaded: Mutex<Option<InDrive>>,
    expected: Option<Expectation>,
}

impl Shelved {
    pub fn new(pool: &Arc<DrivePool>, slot: u32, barcode: Option<&str>) -> Shelved {
        let changer = pool.changer().name().to_string();
        let name = match barcode {
            Some(b) => format!("{changer} slot {slot} ({b})"),
            None => format!("{changer} slot {slot}"),
        };
        Shelved {
            pool: Arc::clone(pool),
            slot,
            name: PathBuf::from(name),
            loaded: Mutex::new(None),
            expected: None,
        }
    }

    /// Check, after every load and before anything is read, that the
    /// cartridge holds what it was chosen for (`changer::cache`: the
    /// label read after the load decides, never the hint).
    pub fn expecting(mut self, check: Expectation) -> Shelved {
        self.expected = Some(check);
        self
    }

    fn inner(&self) -> MutexGuard<'_, Option<InDrive>> {
        self.loaded.lock().expect("no panic")
    }

    fn with<T>(&self, detached: T, f: impl FnOnce(&dyn Device) -> T) -> T {
        match self.inner().as_ref() {
            Some((_, dev)) => f(dev.as_ref()),
            None => detached,
        }
    }

    fn io<T>(&self, f: impl FnOnce(&dyn Device) -> std::io::Result<T>) -> std::io::Result<T> {
        match self.inner().as_ref() {
            Some((_, dev)) => f(dev.as_ref()),
            None => Err(not_loaded()),
        }
    }
}

impl Shelved {
    fn load(&self, drive: u32) -> std::io::Result<()> {
        self.pool
            .changer()
            .load(self.slot, drive)
            .map_err(changer_io)?;
        *self.pool.loads.lock().expect("no panic") += 1;
        Ok(())
    }
}

fn not_loaded() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENOMEDIUM)
}

fn changer_io(error: ChangerError) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

impl Device for Shelved {
    fn path(&self) -> &Path {
        &self.name
    }
    fn kind(&self) -> Kind {
        self.with(Kind::Tape, |d| d.kind())
    }
    fn fd(&self) -> RawFd {
        self.with(-1, |d| d.fd())
    }
    fn capacity_bytes(&self) -> u64 {
        self.with(0, |d| d.capacity_bytes())
    }
    fn block_bytes(&self) -> u32 {
        self.with(crate::format::BLOCK_BYTES as u32, |d| d.block_bytes())
    }
    fn direct_io(&self) -> bool {
        self.with(false, |d| d.direct_io())
    }
    fn sync(&self) -> std::io::Result<()> {
        self.io(|d| d.sync())
    }
    fn classify(&self, errno: i32) -> ErrorClass {
        self.with(device::classify_errno(errno), |d| d.classify(errno))
    }
    fn access(&self) -> Access {
        Access::Sequential
    }
    fn block_bytes_max(&self) -> Option<u32> {
        self.with(None, |d| d.block_bytes_max())
    }
    fn before_block_write(&self, bytes: u32) -> BlockIo {
        self.with(
            BlockIo::Done {
                result: -libc::ENOMEDIUM,
            },
            |d| d.before_block_write(bytes),
        )
    }
    fn after_block_write(&self, result: i32) -> BlockDone {
        let done = BlockDone {
            result,
            complete_at: None,
        };
        self.with(done, |d| d.after_block_write(result))
    }
    fn before_block_read(&self, buffer_bytes: u32) -> BlockIo {
        self.with(
            BlockIo::Done {
                result: -libc::ENOMEDIUM,
            },
            |d| d.before_block_read(buffer_bytes),
        )
    }
    fn after_block_read(&self, result: i32) -> BlockDone {
        let done = BlockDone {
            result,
            complete_at: None,
        };
        self.with(done, |d| d.after_block_read(result))
    }
    fn tape_op(&self, op: TapeOp) -> std::io::Result<()> {
        self.io(|d| d.tape_op(op))
    }
    fn tape_status(&self) -> std::io::Result<TapeStatus> {
        self.io(|d| d.tape_status())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.io(|d| d.read_at(buf, offset))
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        self.io(|d| d.write_at(buf, offset))
    }
    fn head_object(&self) -> Option<i64> {
        self.with(None, |d| d.head_object())
    }
    /// Take a free drive (waiting for one), load the cartridge, open the
    /// drive for reading.
    fn attach(&self) -> std::io::Result<()> {
        if self.inner().is_some() {
            return Ok(());
        }
        let (drive, holds) = self.pool.take(self.slot);
        let moved = match holds {
            Taken::It => Ok(()),
            Taken::Nothing => self.load(drive.0),
            Taken::Other => {
                let unloaded = self.pool.changer().unload(drive.0);
                if let Err(e) = unloaded {
                    self.pool.give_back(drive, None);
                    return Err(changer_io(e));
                }
                self.load(drive.0)
            }
        };
        let loaded = moved
            .and_then(|()| device::open(&drive.1, Mode::Read).map_err(std::io::Error::other))
            .and_then(|dev| match &self.expected {
                Some(check) => check(dev.as_ref()).map(|()| dev).map_err(|why| {
                    std::io::Error::other(format!("{}: {why}", self.name.display()))
                }),
                None => Ok(dev),
            });
        match loaded {
            Ok(dev) => {
                *self.inner() = Some((drive, dev));
                Ok(())
            }
            Err(e) => {
                // Back to its slot if the load went through.
                let _ = self.pool.changer().unload(drive.0);
                self.pool.give_back(drive, None);
                Err(e)
            }
        }
    }
    /// Close the drive and free it; the cartridge stays in it until
    /// another needs the drive (or the pool goes).
    fn detach(&self) {
        let Some((drive, dev)) = self.inner().take() else {
            return;
        };
        drop(dev);
        self.pool.give_back(drive, Some(self.slot));
    }
}

impl Drop for Shelved {
    fn drop(&mut self) {
        self.detach();
    }
}
