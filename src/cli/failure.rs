//! How a command fails, and the one mapping from a failure to its exit
//! code (`exit_code`), kept against the README's "Exit codes" table:
//!
//! | code | when |
//! |---|---|
//! | 2 `EXIT_USAGE` | bad input, a missing source or device, a device refused by the safety rules, a set that does not fit: nothing was written |
//! | 3 `EXIT_DATA` | data could not all be written, read or restored: a device that exists but cannot be read, corruption, a refused membership or MAC, a catalog not made durable |
//!
//! (0 and 1 are the successes a command returns itself.) Errors of the
//! layers below arrive typed; the CLI's own checks carry their message
//! with their class (`Usage`, `Data`).

use crate::device::DeviceError;
use crate::engine::{BackupError, PlanSetError};
use crate::restore::RestoreError;
use crate::source::select::SelectError;
use crate::source::SourceError;

use super::{EXIT_DATA, EXIT_USAGE};

/// A failed command: what to print and, through `exit_code`, which exit
/// code it means.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A check of the CLI's own found bad input: nothing was written.
    #[error("{0}")]
    Usage(String),
    /// A check of the CLI's own: data could not all be written, read or
    /// restored.
    #[error("{0}")]
    Data(String),
    /// A device to plan on or back up onto could not be probed, inspected
    /// or opened: nothing was written yet.
    #[error(transparent)]
    DeviceToWrite(DeviceError),
    /// A device to be read (restore, verify, list, scan) could not be
    /// probed or opened.
    #[error(transparent)]
    DeviceToRead(DeviceError),
    /// A set could not be opened (`doing` empty), or a restore or verify
    /// run could not go on (`doing`: "restore failed: ", ...).
    #[error("{doing}{error}")]
    Restore {
        doing: &'static str,
        error: RestoreError,
    },
    /// A backup run that could not finish.
    #[error("backup failed: {0}")]
    Backup(BackupError),
    /// The set cannot be planned on the devices given.
    #[error(transparent)]
    Plan(PlanSetError),
    /// `--since`: the earlier set cannot be read (nothing was written).
    #[error("--since: {0}")]
    Since(RestoreError),
    /// The sources cannot be walked.
    #[error(transparent)]
    Source(SourceError),
    /// A selection option is bad (a pattern, an --exclude-from file).
    #[error(transparent)]
    Select(SelectError),
}

/// The exit code of a failure: the one place errors become exit codes
/// (see the module's table).
pub fn exit_code(failure: &Failure) -> i32 {
    match failure {
        Failure::Usage(_) => EXIT_USAGE,
        Failure::Data(_) => EXIT_DATA,
        Failure::DeviceToWrite(_) => EXIT_USAGE,
        Failure::DeviceToRead(error) => device_to_read(error),
        Failure::Restore {
            error: RestoreError::Device(error),
            ..
        } => device_to_read(error),
        Failure::Restore { .. } => EXIT_DATA,
        Failure::Backup(_) => EXIT_DATA,
        Failure::Since(_) | Failure::Plan(_) | Failure::Source(_) | Failure::Select(_) => {
            EXIT_USAGE
        }
    }
}

/// A device to read that is not there (a bad path or spec, no such
/// device node, no tape loaded) is a usage error; one that is there but
/// cannot be opened or read (EIO, EACCES, EBUSY, a server that refuses)
/// is data that could not be read.
fn device_to_read(error: &DeviceError) -> i32 {
    match error {
        DeviceError::Unusable { .. } => EXIT_USAGE,
        DeviceError::Io { error, .. } if leads_nowhere(error) => EXIT_USAGE,
        DeviceError::Io { .. } => EXIT_DATA,
    }
}

/// The path names no device: nothing at it, a component that is not a
/// directory, or a device node with no device behind it.
fn leads_nowhere(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::ENOTDIR
                | libc::ENXIO
                | libc::ENODEV
                | libc::ENAMETOOLONG
                | libc::ELOOP
        )
    ) || error.kind() == std::io::ErrorKind::NotFound
}

impl Failure {
    pub fn code(&self) -> i32 {
        exit_code(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};
    use std::path::Path;

    fn io(errno: i32) -> DeviceError {
        DeviceError::io(Path::new("/dev/x"), "open", Error::from_raw_os_error(errno))
    }

    #[test]
    fn a_device_to_read_that_exists_but_fails_is_data() {
        for errno in [libc::EIO, libc::EACCES, libc::EBUSY, libc::ECONNREFUSED] {
            assert_eq!(exit_code(&Failure::DeviceToRead(io(errno))), EXIT_DATA);
            let error = RestoreError::Device(io(errno));
            let failure = Failure::Restore { doing: "", error };
            assert_eq!(exit_code(&failure), EXIT_DATA);
        }
    }

    #[test]
    fn a_device_that_is_not_there_is_usage() {
        for errno in [libc::ENOENT, libc::ENOTDIR, libc::ENXIO] {
            assert_eq!(exit_code(&Failure::DeviceToRead(io(errno))), EXIT_USAGE);
        }
        let custom = DeviceError::io(Path::new("/x"), "stat", Error::from(ErrorKind::NotFound));
        assert_eq!(exit_code(&Failure::DeviceToRead(custom)), EXIT_USAGE);
        let unusable = DeviceError::unusable(Path::new("/x"), "does not exist");
        assert_eq!(exit_code(&Failure::DeviceToRead(unusable)), EXIT_USAGE);
        // Nothing is written before a device to be written is open.
        assert_eq!(
            exit_code(&Failure::DeviceToWrite(io(libc::EIO))),
            EXIT_USAGE
        );
    }

    #[test]
    fn failures_of_a_run_are_data() {
        let error = RestoreError::NoDevices;
        let failure = Failure::Restore {
            doing: "restore failed: ",
            error,
        };
        assert_eq!(
            failure.to_string(),
            "restore failed: no devices given (use --dev)"
        );
        assert_eq!(exit_code(&failure), EXIT_DATA);
        let backup = Failure::Backup(BackupError::NoCatalog("d0: full".into()));
        assert_eq!(exit_code(&backup), EXIT_DATA);
    }
}
