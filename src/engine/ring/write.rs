//! The device side: the header filled in front of the payload, the record
//! written (or persisted in place), and its completion.

use super::*;

impl<'a> Ring<'a> {
    /// Memory-mapped device: the payload is in place; write the header in
    /// front of it, make the record durable, and count it done.
    pub(super) fn persist_in_place(&mut self, slot: usize) -> Result<(), Stop> {
        self.fill_record(slot);
        let position = self.gens[self.slots[slot].gen].position;
        let media = self.record_media_bytes(slot) as u64;
        self.persist_record(position, media)?;
        self.stats.payload_bytes_in_place += self.gens[self.slots[slot].gen].payload_bytes as u64;
        self.complete_record(slot);
        Ok(())
    }

    /// Memory-mapped device: make the record at `position` durable.
    fn persist_record(&self, position: u64, media: u64) -> Result<(), Stop> {
        self.device
            .persist(position, media)
            .map_err(|error| Stop::Failed {
                error: Fault::Persist {
                    offset: position,
                    bytes: media,
                    error,
                },
            })
    }

    /// Memory-mapped device, transformed record (finished in its slot):
    /// copy it into the mapping at its place, make it durable, and count
    /// it done; the loop frees its slot (`copied_in_place`).
    fn copy_in_place(&mut self, slot: usize, m: Mapping) -> Result<(), Stop> {
        let position = self.gens[self.slots[slot].gen].position;
        let media = self.record_media_bytes(slot) as usize;
        let record = &self.slots[slot].lease.bytes()[..media];
        // `place` kept the record within the usable capacity; the mapping
        // covers the whole device.
        assert!(
            position as usize + media <= m.len,
            "record past the mapping"
        );
        // SAFETY: [position, position + media) lies within the mapping
        // (asserted above), which lives as long as the &Device, longer
        // than the ring; no other record and no I/O uses that range, and
        // the slot's buffer does not overlap the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(record.as_ptr(), m.base.add(position as usize), media)
        };
        self.persist_record(position, media as u64)?;
        self.complete_record(slot);
        self.copied_in_place += 1;
        Ok(())
    }

    pub(super) fn submit_write(&mut self, slot: usize) -> Result<(), Stop> {
        // A record's sequence number is its place in media order, given
        // with its gen (reads complete in any order; the number must not
        // follow them).
        self.fill_record(slot);
        if let Some(sink) = self.stripes {
            self.offer_record(sink, slot);
        }
        if let Some(m) = self.mapping {
            return self.copy_in_place(slot, m);
        }
        let s = &mut self.slots[slot];
        s.phase = Phase::Writing;
        s.retries = 0;
        self.submit_write_rest(slot)
    }

    /// The header of the data record in `slot`, numbered `sequence` on the
    /// device, its CRC not yet set (raw: the payload is not final yet).
    pub(super) fn data_header(&self, slot: usize, sequence: u64) -> RecordHeader {
        let s = &self.slots[slot];
        let g = &self.gens[s.gen];
        RecordHeader {
            kind: RecordKind::Data,
            set_id: self.config.set_id,
            device_index: self.config.device_index,
            sequence,
            file_id: self.taken[g.taken as usize].item.file,
            segment_id: g.taken,
            file_offset: g.file_offset,
            payload_bytes: g.payload_bytes,
            file_size: s.file_size,
            payload_crc: 0,
            transform: crate::format::Transform::RAW,
        }
    }

    /// Fill the header in front of the payload a read put in `slot`: the
    /// payload's CRC and BLAKE3 (passes over bytes in cache), file info,
    /// padding.
    pub(super) fn fill_record(&mut self, slot: usize) {
        let header = self.data_header(slot, self.gens[self.slots[slot].gen].sequence);
        let in_place = self.read_in_place();
        let s = &mut self.slots[slot];
        let g = &self.gens[s.gen];
        let payload_bytes = g.payload_bytes as usize;
        let padded = round_up_block(payload_bytes as u64) as usize;
        let gen = s.gen;
        if g.transformed {
            return self.fill_transformed(slot, header);
        }
        let media = HEADER_BYTES + padded;
        let buffer: &mut [u8] = match in_place {
            // SAFETY: the record's range [position, position + media) lies
            // within the mapping (records end within the capacity), is
            // disjoint from every other record's, and its read has
            // completed: nothing else accesses it now.
            Some(m) => unsafe {
                std::slice::from_raw_parts_mut(m.base.add(g.position as usize), media)
            },
            None => &mut s.lease.bytes_mut()[..media],
        };
        // The payload is where the read put it; only the padding and the
        // header are written by the CPU.
        let (head, payload) = buffer.split_at_mut(HEADER_BYTES);
        payload[payload_bytes..padded].fill(0);
        let header = RecordHeader {
            payload_crc: crate::format::crc32c(&payload[..payload_bytes]),
            ..header
        };
        let source = s.source.as_ref().expect("writing slot has a source");
        header.encode_with_info(Some(source.info_at(header.file_offset)), head);
        debug_assert_eq!(RecordHeader::decode(head), Ok(header));
        self.gens[gen].payload_crc = header.payload_crc;
        // The BLAKE3 of the payload (the file digest's) on the hasher
        // thread, or here when there is none.
        match self.hasher.as_mut() {
            Some(h) => {
                let job = HashJob {
                    gen,
                    payload: payload.as_ptr(),
                    payload_bytes,
                };
                if h.jobs.send(job).is_ok() {
                    h.pending += 1;
                } else {
                    self.gens[gen].payload_hash =
                        crate::format::payload_hash(&payload[..payload_bytes]);
                    self.gens[gen].hashed = true;
                }
            }
            None => {
                self.gens[gen].payload_hash =
                    crate::format::payload_hash(&payload[..payload_bytes]);
                self.gens[gen].hashed = true;
            }
        }
        self.stats.payload_bytes_zero_copy += payload_bytes as u64;
    }

    pub(super) fn submit_write_rest(&mut self, slot: usize) -> Result<(), Stop> {
        let s = &self.slots[slot];
        let g = &self.gens[s.gen];
        let total = self.record_media_bytes(slot);
        if let Some(transport) = self.transport.as_mut() {
            // One request writing the whole record, answered whole or not
            // at all: no partial progress to continue from.
            debug_assert_eq!(s.written_bytes, 0);
            transport.submit_write(slot as u64, &s.lease, total, g.position);
            return Ok(());
        }
        // written_bytes < total <= slot size.
        let range = s.written_bytes as usize..total as usize;
        let offset = g.position + s.written_bytes as u64;
        let entry = io::write_fixed(self.device.fd(), &s.lease, range, offset);
        self.push(entry.user_data(slot as u64))
    }

    pub(super) fn complete_record(&mut self, slot: usize) {
        // The slot's buffer is reused once it is free: its hash first.
        self.await_hash(self.slots[slot].gen);
        let s = &mut self.slots[slot];
        s.phase = Phase::Free;
        s.source = None;
        let g = &mut self.gens[s.gen];
        g.done = true;
        let payload = g.payload_bytes as u64;
        self.stats.payload_bytes += payload;
        self.stats.media_bytes += HEADER_BYTES as u64 + round_up_block(g.stored_len() as u64);
        self.stats.records += 1;
        self.progress.fetch_add(payload, Ordering::Relaxed);
        self.maybe_settle();
    }

    /// Returns true when the record is complete and the slot free again.
    pub(super) fn on_write(&mut self, slot: usize, result: i32) -> Result<bool, Stop> {
        let total = self.record_media_bytes(slot);
        let position = self.gens[self.slots[slot].gen].position;
        let s = &mut self.slots[slot];
        let offset = position + s.written_bytes as u64;
        let errno = match result {
            r if r < 0 => -r,
            0 => libc::ENOSPC,
            r => {
                s.written_bytes += r as u32;
                if s.written_bytes < total {
                    self.stats.short_writes += 1;
                    self.submit_write_rest(slot)?;
                    return Ok(false);
                }
                self.complete_record(slot);
                return Ok(true);
            }
        };
        let error = std::io::Error::from_raw_os_error(errno);
        match self.device.classify(errno) {
            ErrorClass::Retry if s.retries < RETRIES_TRANSIENT_MAX => {
                s.retries += 1;
                self.stats.retries += 1;
                self.submit_write_rest(slot)?;
                Ok(false)
            }
            ErrorClass::Full => Err(Stop::Full {
                error: Fault::Write { offset, error },
                physical: true,
            }),
            _ if s.retries < self.config.write_retries => {
                s.retries += 1;
                self.stats.retries += 1;
                self.submit_write_rest(slot)?;
                Ok(false)
            }
            _ => Err(Stop::Failed {
                error: Fault::WriteRetried {
                    offset,
                    error,
                    retries: s.retries,
                },
            }),
        }
    }
}
