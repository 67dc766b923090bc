//! The data path: the dispatcher (least-filled, work stealing) and the
//! ring workers (one io_uring per device: read sources, write records,
//! fail over). The backup run that drives them lives in `backup`.

pub mod dispatch;
pub mod ring;

use crate::plan::Plan;
use crate::source::incremental::Increment;
use crate::source::spill::SpilledEntries;

/// Everything a backup run reads: the walked entries (file id = index;
/// spilled to a temporary file, read back by index),
/// the plan, and for an incremental set what it refers to instead of storing.
pub struct SetInput {
    pub entries: SpilledEntries,
    pub plan: Plan,
    pub since: Option<Increment>,
}
