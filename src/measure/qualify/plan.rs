//! What a run decides before it starts (sizes, matrix, extents): a pure
//! function of the options and the capacity, tested alone.

use super::pattern;
use super::{CellPlan, VERIFY_BYTES_DEFAULT_MAX, VERIFY_BYTES_MIN, VERIFY_FRACTION_DEFAULT};
use crate::format::BLOCK_BYTES;
use crate::measure::bench::Rw;

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// A small matrix and smaller bounds (a minute or less on most disks).
    pub quick: bool,
    /// The fraction of the device the pattern check covers; None: the
    /// default (1%, at least 4 MiB, at most 256 MiB / 64 MiB quick).
    pub verify_fraction: Option<f64>,
}

impl Options {
    pub fn validate(&self) -> Result<(), OptionsError> {
        if let Some(f) = self.verify_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return Err(OptionsError::VerifyFraction(f));
            }
        }
        Ok(())
    }
}

/// Options outside their limits (the option it names is the user's).
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum OptionsError {
    #[error("--verify-fraction {0} must be above 0 and at most 1 (or a percentage up to 100%)")]
    VerifyFraction(f64),
}

/// Everything the run will do, from the options and the capacity.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Writes first (every read cell reads what a write cell wrote).
    pub matrix: Vec<CellPlan>,
    /// The largest single I/O tried.
    pub max_io_bound_bytes: u64,
    /// Durable writes of each kind (fsync, RWF_DSYNC).
    pub sync_rounds: u32,
    /// Bytes the pattern check covers.
    pub verify_bytes: u64,
}

/// Block sizes and queue depths of the matrix.
pub fn matrix_axes(quick: bool) -> (&'static [usize], &'static [usize]) {
    if quick {
        (&[4 << 10, 1 << 20], &[1, 16])
    } else {
        (&[4 << 10, 64 << 10, 1 << 20, 4 << 20], &[1, 4, 16, 32])
    }
}

pub fn plan(options: &Options, capacity_bytes: u64) -> Plan {
    let (sizes, depths) = matrix_axes(options.quick);
    // Each cell moves a bounded number of operations and bytes.
    let (ios_max, cell_bytes_max): (u64, u64) = if options.quick {
        (1024, 16 << 20)
    } else {
        (4096, 256 << 20)
    };
    let usable = capacity_bytes / BLOCK_BYTES as u64 * BLOCK_BYTES as u64;
    let mut matrix = Vec::with_capacity(2 * sizes.len() * depths.len());
    for rw in [Rw::Write, Rw::Read] {
        for &bs in sizes {
            for &qd in depths {
                let size = (bs as u64 * ios_max).min(cell_bytes_max).min(usable);
                matrix.push(CellPlan {
                    rw,
                    block_bytes: bs,
                    queue_depth: qd,
                    size_bytes: size,
                });
            }
        }
    }
    let verify_bytes = match options.verify_fraction {
        Some(f) => ((capacity_bytes as f64 * f) as u64).max(pattern::UNIT_BYTES as u64),
        None => {
            let cap = if options.quick {
                VERIFY_BYTES_DEFAULT_MAX / 4
            } else {
                VERIFY_BYTES_DEFAULT_MAX
            };
            ((capacity_bytes as f64 * VERIFY_FRACTION_DEFAULT) as u64).clamp(VERIFY_BYTES_MIN, cap)
        }
    }
    .min(usable);
    Plan {
        matrix,
        max_io_bound_bytes: if options.quick { 16 << 20 } else { 64 << 20 },
        sync_rounds: if options.quick { 16 } else { 128 },
        verify_bytes,
    }
}
