//! The data path: the dispatcher (least-filled, work stealing) and the
//! ring workers (one io_uring per device: read sources, write records,
//! fail over). The backup run that drives them lives in `backup`.

pub mod dispatch;
pub mod ring;

use crate::plan::Plan;
use crate::source::incremental::Increment;
use crate::source::Entry;

/// Everything a backup run reads: the walked entries (file id = index),
/// the plan, and for an incremental set what it refers to instead of storing.
pub struct SetInput {
    pub entries: Vec<Entry>,
    pub plan: Plan,
    pub since: Option<Increment>,
}
