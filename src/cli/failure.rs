//! How a command fails, and the one mapping from a failure to its exit
//! code (`exit_code`), kept against the README's "Exit codes" table:
//!
//! | code | when |
//! |---|---|
//! | 2 `EXIT_USAGE` | bad input, a missing source or device, a device refused by the safety rules, a set that does not fit: nothing was written |
//! | 3 `EXIT_DATA` | data could not all be written, read or restored: a device that exists but cannot be read, corruption, a refused membership or MAC, a catalog not made durable |
//!
//! A command that runs to its end returns an `Outcome` (0 `EXIT_OK`, 1
//! `EXIT_DEGRADED`, or 3 when it could not write, read or restore
//! everything); one that cannot returns a `Failure`. Both become exit
//! codes here and nowhere else. Errors of the layers below arrive typed;
//! the CLI's own checks carry their message with their class (`Usage`,
//! `Data`).

use crate::backup::{BackupError, PlanSetError};
use crate::device::changer::ChangerError;
use crate::device::DeviceError;
use crate::measure::bench::{BenchError, ConfigError};
use crate::measure::qualify::{OptionsError, QualifyError};
use crate::restore::RestoreError;
use crate::source::select::SelectError;
use crate::source::SourceError;

/// How a command that ran to its end came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done (exit 0).
    Done,
    /// Done, but a device failed or a file changed while it was read: the
    /// result is whole but not as planned (exit 1).
    Degraded,
    /// Data could not all be written, read, restored or verified (or a
    /// qualification check failed), or the output could not all be
    /// written (exit 3).
    Incomplete,
    /// `pbio diff`: the set and the live tree differ (exit 1).
    Differs,
}

// The exit codes of the table in the module docs.
const EXIT_OK: i32 = 0;
const EXIT_DEGRADED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_DATA: i32 = 3;

impl Outcome {
    pub fn code(self) -> i32 {
        match self {
            Outcome::Done => EXIT_OK,
            Outcome::Degraded => EXIT_DEGRADED,
            Outcome::Incomplete => EXIT_DATA,
            Outcome::Differs => EXIT_DEGRADED,
        }
    }

    /// A success whose output could not all be written (a full disk
    /// behind `>`) is incomplete; any other outcome stands.
    pub fn with_output(self, output_complete: bool) -> Outcome {
        match self {
            Outcome::Done if !output_complete => Outcome::Incomplete,
            other => other,
        }
    }
}

/// A failed command: what to print and, through `exit_code`, which exit
/// code it means.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The command line was refused before any command ran (clap, or the
    /// short usage, said why).
    #[error("the command line was refused")]
    CommandLine,
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
    /// A tape library refused a request (usage) or failed (data).
    #[error(transparent)]
    Changer(ChangerError),
    /// `pbio bench` could not measure: a configuration the devices do not
    /// take (usage) or a device that failed (data).
    #[error("{}", bench_message(.0))]
    Bench(BenchError),
    /// `pbio bench`'s options are outside their limits.
    #[error(transparent)]
    BenchConfig(ConfigError),
    /// `pbio qualify` could not start on the device (its kind has no
    /// checks, its options or its size do not fit): nothing was measured.
    #[error(transparent)]
    Qualify(QualifyError),
    /// `pbio qualify`'s options are outside their limits.
    #[error(transparent)]
    QualifyOptions(OptionsError),
}

/// A device that failed under the benchmark says so; a configuration
/// refused is shown as it is.
fn bench_message(error: &BenchError) -> String {
    match error {
        BenchError::Io { .. } => format!("bench failed: {error}"),
        BenchError::Unusable { .. } => error.to_string(),
    }
}

/// The exit code of a failure: the one place errors become exit codes
/// (see the module's table).
pub fn exit_code(failure: &Failure) -> i32 {
    match failure {
        Failure::CommandLine | Failure::Usage(_) => EXIT_USAGE,
        Failure::Data(_) => EXIT_DATA,
        Failure::DeviceToWrite(_) => EXIT_USAGE,
        Failure::DeviceToRead(error) => device_to_read(error),
        Failure::Restore {
            error: RestoreError::Device(error),
            ..
        } => device_to_read(error),
        // An encrypted set without its key, or with a wrong one: nothing
        // was read past the label, nothing written.
        Failure::Restore {
            error: RestoreError::Encrypted { .. },
            ..
        } => EXIT_USAGE,
        Failure::Restore { .. } => EXIT_DATA,
        Failure::Backup(_) => EXIT_DATA,
        Failure::Since(_) | Failure::Plan(_) | Failure::Source(_) | Failure::Select(_) => {
            EXIT_USAGE
        }
        // A slot, drive or library that does not exist or is in the wrong
        // state (nothing moved) is bad input; a library that fails is 3.
        Failure::Changer(error) if error.is_request() => EXIT_USAGE,
        Failure::Changer(_) => EXIT_DATA,
        Failure::Bench(BenchError::Unusable { .. }) | Failure::BenchConfig(_) => EXIT_USAGE,
        Failure::Bench(BenchError::Io { .. }) => EXIT_DATA,
        Failure::Qualify(_) | Failure::QualifyOptions(_) => EXIT_USAGE,
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
    fn a_changer_request_is_usage_a_failing_changer_data() {
        let full = ChangerError::DriveFull {
            changer: "vlib:x".into(),
            drive: 0,
            barcode: None,
        };
        assert_eq!(exit_code(&Failure::Changer(full)), EXIT_USAGE);
        let spec = ChangerError::Spec("x,y".into());
        assert_eq!(exit_code(&Failure::Changer(spec)), EXIT_USAGE);
        let damaged = ChangerError::Unusable {
            changer: "vlib:x".into(),
            why: "vlib.state is damaged".into(),
        };
        assert_eq!(exit_code(&Failure::Changer(damaged)), EXIT_DATA);
        let io = ChangerError::Io {
            changer: "/dev/sg3".into(),
            what: "open".into(),
            error: Error::from_raw_os_error(libc::EBUSY),
        };
        assert_eq!(exit_code(&Failure::Changer(io)), EXIT_DATA);
    }

    #[test]
    fn bench_and_qualify_refusals_are_usage_a_failing_device_data() {
        let io = Failure::Bench(BenchError::Io {
            device: "/dev/x".into(),
            op: "write",
            offset: 4096,
            class: crate::device::ErrorClass::Failed,
            error: Error::from_raw_os_error(libc::EIO),
        });
        assert_eq!(exit_code(&io), EXIT_DATA);
        assert!(io
            .to_string()
            .starts_with("bench failed: device /dev/x: write at offset 4096"));
        let config = ConfigError::QueueDepth(0);
        let unusable = Failure::Bench(BenchError::Unusable {
            device: "/dev/x".into(),
            why: config.into(),
        });
        assert_eq!(exit_code(&unusable), EXIT_USAGE);
        assert_eq!(unusable.to_string(), format!("device /dev/x: {config}"));
        assert_eq!(exit_code(&Failure::BenchConfig(config)), EXIT_USAGE);
        let options = OptionsError::VerifyFraction(2.0);
        assert_eq!(exit_code(&Failure::QualifyOptions(options)), EXIT_USAGE);
        let small = QualifyError::TooSmall {
            device: "/dev/x".into(),
            detail: "1 MiB".into(),
        };
        assert_eq!(exit_code(&Failure::Qualify(small)), EXIT_USAGE);
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
        let devices = vec![crate::backup::NoCatalogOn {
            device: "d0".into(),
            why: crate::backup::NoCatalogWhy::Unknown,
        }];
        let backup = Failure::Backup(BackupError::NoCatalog { devices });
        assert_eq!(
            backup.to_string(),
            "backup failed: no device could take the catalog: the set is not restorable (d0: -)"
        );
        assert_eq!(exit_code(&backup), EXIT_DATA);
    }
}
