//! The source side: records generated from work items, bound to slots,
//! and read from their files into the slot (or the device mapping).

use super::*;

impl<'a> Ring<'a> {
    /// Take the next record from the cursor (pulling work from the
    /// dispatcher as needed, waiting for it when `blocking`), bind it to a
    /// free slot, return the slot.
    pub(super) fn next_record(
        &mut self,
        cursor: &mut Option<Cursor>,
        input: &SetInput,
        dispatcher: &Dispatcher,
        blocking: bool,
    ) -> Result<Record, Stop> {
        loop {
            if cursor.is_none() {
                let index = self.config.device_index as usize;
                let next = if blocking {
                    dispatcher
                        .next(index, self.room_bytes())
                        .map_or(Next::Done, Next::Item)
                } else {
                    dispatcher.try_next(index, self.room_bytes())
                };
                let item = match next {
                    Next::Item(item) => item,
                    Next::Wait => return Ok(Record::Wait),
                    Next::Done => {
                        dispatcher.writing(index);
                        return Ok(Record::Exhausted);
                    }
                };
                match self.open_item(item, input) {
                    Ok(c) => *cursor = Some(c),
                    // Its source cannot be opened any more (removed since
                    // the walk, permissions changed): no device could; the
                    // rest of the set goes on without it, and it is named.
                    Err(RingError::Source { error, .. }) => {
                        dispatcher.skip(item, error);
                        continue;
                    }
                    Err(e) => return Err(Stop::Source(e)),
                }
            }
            let c = cursor.as_mut().expect("cursor set above");
            while c.range_index < c.ranges.len() {
                let (start, end) = c.ranges[c.range_index];
                let offset = c.next_offset.max(start);
                if offset >= end {
                    c.range_index += 1;
                    continue;
                }
                let chunk = self.config.record_payload_bytes_max as u64;
                let record_end = end.min((offset / chunk + 1) * chunk);
                let payload_bytes = (record_end - offset) as u32;
                let media = HEADER_BYTES as u64 + round_up_block(payload_bytes as u64);
                self.check_room(media)?;
                c.next_offset = record_end;
                let t = &mut self.taken[c.taken as usize];
                t.gens += 1;
                t.generated_until = record_end;
                let gen = self.gens.len();
                self.gens.push(Gen {
                    taken: c.taken,
                    sequence: self.next_sequence,
                    file_offset: offset,
                    payload_bytes,
                    // With compression its place is known once compressed.
                    position: if self.transforming() {
                        transform::UNPLACED
                    } else {
                        self.position
                    },
                    payload_crc: 0,
                    payload_hash: [0; 32],
                    hashed: false,
                    done: false,
                    transform: crate::format::Transform::RAW,
                    transformed: false,
                });
                self.next_sequence += 1;
                let slot = self
                    .slots
                    .iter()
                    .position(|s| s.phase == Phase::Free)
                    .expect("caller checked a slot is free");
                let s = &mut self.slots[slot];
                s.phase = Phase::Reading;
                s.source = Some(c.source.clone());
                s.gen = gen;
                s.read_bytes = 0;
                s.written_bytes = 0;
                s.retries = 0;
                s.file_size = c.file_size;
                if !self.transforming() {
                    self.position += media;
                }
                return Ok(Record::Slot(slot));
            }
            self.taken[c.taken as usize].complete = true;
            *cursor = None;
        }
    }

    pub(super) fn open_item(
        &mut self,
        item: WorkItem,
        input: &SetInput,
    ) -> Result<Cursor, RingError> {
        let entry = input.entries.try_at(item.file as usize)?;
        let (size_bytes, data) = match &entry.kind {
            crate::source::EntryKind::File { size_bytes, data } => (*size_bytes, data.as_ref()),
            other => unreachable!("work item for a non-file entry {other:?}"),
        };
        let source = entry.source();
        let (file, direct) =
            crate::device::open_maybe_direct(OpenOptions::new().read(true), &source).map_err(
                |error| RingError::Source {
                    path: crate::units::shown_path(&source),
                    op: "open",
                    offset: item.offset,
                    error,
                },
            )?;
        let (start, end) = (item.offset, item.end());
        let ranges: Vec<(u64, u64)> = match data {
            None => vec![(start, end)],
            Some(extents) => extents
                .iter()
                .map(|&(o, l)| (o.max(start), (o + l).min(end)))
                .filter(|(s, e)| s < e)
                .collect(),
        };
        let taken = self.taken.len() as u32;
        self.taken.push(Taken {
            item,
            first_gen: self.gens.len(),
            gens: 0,
            position: self.position,
            generated_until: item.offset,
            complete: false,
        });
        let info = FileInfo {
            mode: entry.meta.stat.mode,
            uid: entry.meta.stat.uid,
            gid: entry.meta.stat.gid,
            mtime_sec: entry.meta.stat.mtime_sec,
            mtime_nsec: entry.meta.stat.mtime_nsec,
            data_bytes: match data {
                None => size_bytes,
                Some(extents) => extents.iter().map(|e| e.1).sum(),
            },
            path: entry.path.clone(),
            path_truncated: false,
            xattrs: None,
            xattrs_cut: false,
        };
        let first_info = FileInfo {
            xattrs: Some(entry.meta.xattrs.clone()),
            ..info.clone()
        };
        Ok(Cursor {
            taken,
            source: Rc::new(Source {
                file,
                direct,
                path: source,
                info,
                first_info,
                first_offset: match data {
                    None => 0,
                    Some(extents) => extents.first().map_or(0, |e| e.0),
                },
            }),
            ranges,
            range_index: 0,
            next_offset: start,
            file_size: size_bytes,
        })
    }

    /// Queue an entry of a slot whose phase says an operation is in
    /// flight: the CPU does not touch its lease (or its record's range of
    /// the mapping) until the completion is reaped; fds stay open
    /// (Rc<Source>, &Device) until then.
    pub(super) fn push(&mut self, entry: Sqe) -> Result<(), Stop> {
        self.ring.push(entry).map_err(|e| Stop::Failed {
            error: Fault::Enter(e),
        })
    }

    pub(super) fn submit_read(&mut self, slot: usize) -> Result<(), Stop> {
        let in_place = self.read_in_place();
        let s = &mut self.slots[slot];
        let g = &self.gens[s.gen];
        let source = s.source.as_ref().expect("reading slot has a source");
        let remaining = g.payload_bytes - s.read_bytes;
        // O_DIRECT needs block-multiple lengths; a read past EOF is simply short.
        let len = if source.direct {
            round_up_block(remaining as u64) as u32
        } else {
            remaining
        };
        let entry = match in_place {
            Some(m) => {
                // Straight into the mapping, at the payload's final place.
                let at = g.position as usize + HEADER_BYTES + s.read_bytes as usize;
                // Never past the mapping (records end within the capacity,
                // so this only guards the block rounding).
                let len = len.min(m.len.saturating_sub(at) as u32);
                // SAFETY: at + len <= m.len (clamped above; the record's
                // position is within the capacity); the mapping lives as
                // long as the &Device, longer than the ring; this record's
                // range is used by this slot's read alone and the CPU does
                // not touch it until the read is reaped.
                unsafe {
                    io::read_into(
                        source.file.as_raw_fd(),
                        m.base.add(at),
                        len,
                        g.file_offset + s.read_bytes as u64,
                    )
                }
                .user_data(slot as u64)
            }
            None => {
                // HEADER_BYTES + read_bytes + len stays within the slot
                // (payload area is chunk_bytes, len <= round_up(chunk)).
                let at = HEADER_BYTES + s.read_bytes as usize;
                let fd = source.file.as_raw_fd();
                let offset = g.file_offset + s.read_bytes as u64;
                io::read_fixed(fd, &mut s.lease, at..at + len as usize, offset)
                    .user_data(slot as u64)
            }
        };
        let direct = source.direct;
        if direct {
            self.stats.reads_direct += 1;
        } else {
            self.stats.reads_buffered += 1;
        }
        self.push(entry)
    }

    /// Returns true when the record is complete and the slot free again
    /// (a memory-mapped device: nothing left to write).
    pub(super) fn on_read(&mut self, slot: usize, result: i32) -> Result<bool, Stop> {
        let s = &mut self.slots[slot];
        let g = &self.gens[s.gen];
        let source = s.source.clone().expect("reading slot has a source");
        let source_error = |offset, error| {
            Stop::Source(RingError::Source {
                path: crate::units::shown_path(&source.path),
                op: "read",
                offset,
                error,
            })
        };
        if result < 0 {
            let errno = -result;
            if (errno == libc::EINTR || errno == libc::EAGAIN) && s.retries < RETRIES_TRANSIENT_MAX
            {
                s.retries += 1;
                self.stats.retries += 1;
                return self.submit_read(slot).map(|()| false);
            }
            return Err(source_error(
                g.file_offset + s.read_bytes as u64,
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        let got = result as u32;
        if got == 0 {
            // The file shrank since the walk: the rest of the record is
            // zeros (as GNU tar pads a file that shrank). The set stays
            // complete; the check after the run names the file as changed
            // (its size differs from the walk's) and the exit code is 1.
            let (from, to) = (s.read_bytes as usize, g.payload_bytes as usize);
            let position = g.position as usize;
            match self.read_in_place() {
                // SAFETY: the record's payload range lies within the
                // mapping and belongs to this slot alone; its read has
                // completed (nothing else accesses it).
                Some(m) => unsafe {
                    std::ptr::write_bytes(m.base.add(position + HEADER_BYTES + from), 0, to - from)
                },
                None => self.slots[slot].lease.bytes_mut()[HEADER_BYTES + from..HEADER_BYTES + to]
                    .fill(0),
            }
            let s = &mut self.slots[slot];
            s.read_bytes = g.payload_bytes;
            self.stats.zero_filled_bytes += (to - from) as u64;
            return self.after_read(slot);
        }
        s.read_bytes = (s.read_bytes + got).min(g.payload_bytes);
        if s.read_bytes < g.payload_bytes {
            self.stats.short_reads += 1;
            return self.submit_read(slot).map(|()| false);
        }
        self.after_read(slot)
    }

    /// The record's payload is complete: write it (or make it durable in
    /// place). Returns true when the slot is free again.
    pub(super) fn after_read(&mut self, slot: usize) -> Result<bool, Stop> {
        if self.transforming() {
            self.send_transform(slot);
            return Ok(false);
        }
        if self.sequential {
            // Records are numbered in media order, which on a sequential
            // device is gen order.
            self.fill_record(slot);
            let s = &mut self.slots[slot];
            s.phase = Phase::Ready;
            s.retries = 0;
            return self.pump().map(|()| false);
        }
        if self.mapping.is_some() {
            return self.persist_in_place(slot).map(|()| true);
        }
        self.submit_write(slot).map(|()| false)
    }
}
