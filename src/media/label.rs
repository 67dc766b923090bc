//! The label: block 0 of every device of a set (docs/FORMAT.md, "Label").

use super::tape::{read_tape_block, tape_op, write_tape_block};
use super::{name, read_at, write_all_at, MediaError};
use crate::device::{Access, Device, TapeOp};
use crate::format::{Label, BLOCK_BYTES};
use crate::io::buffers::BufferPool;

/// Write the label at offset 0. On a tape: rewind and write it as block 0,
/// which ends everything recorded on the tape before.
pub fn write_label(dev: &dyn Device, label: &Label) -> Result<(), MediaError> {
    let mut pool = BufferPool::new(1, BLOCK_BYTES);
    let buf = pool.slot_mut(0);
    label.encode_into(buf);
    if dev.access() == Access::Sequential {
        tape_op(dev, TapeOp::Rewind, 0)?;
        return write_tape_block(dev, buf, 0);
    }
    write_all_at(dev, buf, 0)
}

pub fn read_label(dev: &dyn Device) -> Result<Label, MediaError> {
    let mut pool = BufferPool::new(1, BLOCK_BYTES);
    let buf = pool.slot_mut(0);
    let got = if dev.access() == Access::Sequential {
        tape_op(dev, TapeOp::Rewind, 0)?;
        read_tape_block(dev, buf, 0)?
    } else {
        read_at(dev, buf, 0)?
    };
    Label::decode(&buf[..got]).map_err(|error| MediaError::Format {
        device: name(dev),
        what: "label",
        offset: 0,
        error,
    })
}
