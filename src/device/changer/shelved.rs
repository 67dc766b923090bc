//! A cartridge of a library read through whichever drive is free: restore,
//! verify and list with `--changer` see each cartridge as a device
//! (`Shelved`) that is attached before it is read (a free drive taken, the
//! cartridge loaded, the drive opened) and detached after (the drive
//! closed, the cartridge unloaded, the drive given back). With fewer
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
    free: Mutex<Vec<(u32, DeviceSpec)>>,
    freed: Condvar,
    /// Loads done through the pool.
    loads: Mutex<u32>,
}

impl DrivePool {
    /// `drives`: (drive number, its device), all empty.
    pub fn new(changer: Box<dyn Changer>, drives: Vec<(u32, DeviceSpec)>) -> Arc<DrivePool> {
        assert!(!drives.is_empty());
        Arc::new(DrivePool {
            changer: Mutex::new(changer),
            free: Mutex::new(drives),
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

    /// Wait for a free drive.
    fn take(&self) -> (u32, DeviceSpec) {
        let mut free = self.free.lock().expect("no panic");
        loop {
            if let Some(drive) = free.pop() {
                return drive;
            }
            free = self.freed.wait(free).expect("no panic");
        }
    }

    fn give_back(&self, drive: (u32, DeviceSpec)) {
        self.free.lock().expect("no panic").push(drive);
        self.freed.notify_one();
    }
}

/// The drive a cartridge is in (number, device) and that drive opened.
type InDrive = ((u32, DeviceSpec), Box<dyn Device>);

/// A cartridge in a slot, read through the pool's drives.
pub struct Shelved {
    pool: Arc<DrivePool>,
    slot: u32,
    /// "CHANGER slot N (BARCODE)": what messages name it by.
    name: PathBuf,
    /// The drive it is in and the drive opened, while attached.
    loaded: Mutex<Option<InDrive>>,
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
        }
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
        let drive = self.pool.take();
        let loaded = self
            .pool
            .changer()
            .load(self.slot, drive.0)
            .map_err(changer_io)
            .and_then(|()| device::open(&drive.1, Mode::Read).map_err(std::io::Error::other));
        match loaded {
            Ok(dev) => {
                *self.pool.loads.lock().expect("no panic") += 1;
                *self.inner() = Some((drive, dev));
                Ok(())
            }
            Err(e) => {
                // Back to its slot if the load went through.
                let _ = self.pool.changer().unload(drive.0);
                self.pool.give_back(drive);
                Err(e)
            }
        }
    }
    /// Close the drive, put the cartridge back, free the drive.
    fn detach(&self) {
        let Some((drive, dev)) = self.inner().take() else {
            return;
        };
        drop(dev);
        let _ = self.pool.changer().unload(drive.0);
        self.pool.give_back(drive);
    }
}

impl Drop for Shelved {
    fn drop(&mut self) {
        self.detach();
    }
}
