//! The ring's loops: random access (every slot a read then a write) and
//! sequential (read ahead into every slot, one block write in flight, in
//! media order).

use super::*;

/// How long a ring with records at the compression workers waits for
/// I/O before it looks at them again.
const TRANSFORM_POLL: Duration = Duration::from_micros(200);

/// Where a ring's records come from: the set's input, the shared work,
/// the item being read and whether the work for this device has ended.
pub(super) struct Feed<'f> {
    input: &'f SetInput,
    dispatcher: &'f Dispatcher,
    cursor: Option<Cursor>,
    exhausted: bool,
    /// The device's room ended at a record not read yet: the records read
    /// ahead before it are written first, then the ring stops with this.
    room_stop: Option<Stop>,
}

impl<'f> Feed<'f> {
    pub(super) fn new(input: &'f SetInput, dispatcher: &'f Dispatcher) -> Self {
        Feed {
            input,
            dispatcher,
            cursor: None,
            exhausted: false,
            room_stop: None,
        }
    }
}

impl<'a> Ring<'a> {
    /// The next record from `feed` (`next_record`), noting in `feed` when
    /// the work has ended.
    fn feed_record(&mut self, feed: &mut Feed<'_>, blocking: bool) -> Result<Record, Stop> {
        let record = match self.next_record(&mut feed.cursor, feed.input, feed.dispatcher, blocking)
        {
            // No room for the next record (more work taken than fits):
            // no more are read, the ones read ahead are still written
            // (issue 20: a spare stopped before writing any of them).
            Err(
                stop @ Stop::Full {
                    physical: false, ..
                },
            ) => {
                feed.room_stop = Some(stop);
                Record::Exhausted
            }
            other => other?,
        };
        if matches!(record, Record::Exhausted) {
            feed.exhausted = true;
        }
        Ok(record)
    }

    pub(super) fn run_loop(&mut self, feed: &mut Feed<'_>) -> Result<(), Stop> {
        let mut inflight = 0usize;
        let mut completions: Vec<(u64, i32)> = Vec::with_capacity(self.slots.len());
        loop {
            // 0. `--parity`: the parity records the stripes gave this
            // device go first (`stripe.rs`).
            self.take_parity()?;
            // 1. Fill free slots with new records and queue their reads.
            // Only a ring with nothing in flight waits for shared work: one
            // with writes in flight must go on reaping them (one may find
            // the medium full and hand work back), and counts as working.
            // With `--parity` it never blocks there: parity may come.
            while inflight < self.slots.len() && !feed.exhausted {
                let blocking = inflight == 0 && self.stripes.is_none();
                match self.feed_record(feed, blocking)? {
                    Record::Slot(slot) => {
                        self.submit_read(slot)?;
                        inflight += 1;
                    }
                    Record::Wait => break,
                    Record::Exhausted => {}
                }
            }
            if inflight == 0 && self.ring.in_flight() == 0 && self.parity.idle() {
                if !feed.exhausted {
                    self.wait_for_work(feed.dispatcher)?;
                    continue;
                }
                return feed.room_stop.take().map_or(Ok(()), Err);
            }
            self.pump_transport()?;
            if self.transforming() {
                // Nothing of ours in flight (the ring's or the
                // transport's): only the workers can move on, wait for them.
                let idle = self.ring.in_flight() == 0 && !self.transport_waiting();
                let collected = self.collect_transforms(idle);
                // A mapped device's records are done once copied in place.
                inflight -= std::mem::take(&mut self.copied_in_place);
                collected?;
                if self.workers.as_ref().is_some_and(|w| w.pending > 0) && !idle {
                    // Both may move: look at the workers again soon.
                    self.ring
                        .submit_and_wait_timeout(1, TRANSFORM_POLL)
                        .map_err(|e| Stop::Failed {
                            error: Fault::Enter(e),
                        })?;
                    completions.clear();
                    self.ring.reap(&mut completions);
                } else if self.ring.in_flight() == 0 {
                    continue;
                } else {
                    self.ring.turn(&mut completions).map_err(|e| Stop::Failed {
                        error: Fault::Enter(e),
                    })?;
                }
                self.act(&completions, &mut inflight)?;
                continue;
            }
            // 2. Submit and wait for at least one completion; 3. copy
            // completions out before acting on them.
            self.ring.turn(&mut completions).map_err(|e| Stop::Failed {
                error: Fault::Enter(e),
            })?;
            // 4. Act.
            self.act(&completions, &mut inflight)?;
        }
    }

    /// Step 4 of the random-access loop: act on the completions copied
    /// out; `inflight` counts the slots in use.
    pub(super) fn act(
        &mut self,
        completions: &[(u64, i32)],
        inflight: &mut usize,
    ) -> Result<(), Stop> {
        for &(user_data, result) in completions {
            if user_data & io::USER_DATA_TRANSPORT != 0 {
                let mut done = std::mem::take(&mut self.transport_done);
                let acted = self.on_transport_cqe(user_data, result, &mut done);
                let mut outcome = acted;
                for &(slot, result) in &done {
                    if outcome.is_ok() && slot as usize >= self.slots.len() {
                        let j = slot as usize - self.slots.len();
                        if let Err(stop) = self.on_parity_write(j, result) {
                            outcome = Err(stop);
                        }
                    } else if outcome.is_ok() {
                        match self.on_write(slot as usize, result) {
                            Ok(true) => *inflight -= 1,
                            Ok(false) => {}
                            Err(stop) => outcome = Err(stop),
                        }
                    }
                }
                done.clear();
                self.transport_done = done;
                outcome?;
                continue;
            }
            let slot = user_data as usize;
            if slot >= self.slots.len() {
                self.on_parity_write(slot - self.slots.len(), result)?;
                continue;
            }
            match self.slots[slot].phase {
                Phase::Reading => {
                    if self.on_read(slot, result)? {
                        *inflight -= 1;
                    }
                }
                Phase::Writing => {
                    if self.on_write(slot, result)? {
                        *inflight -= 1;
                    }
                }
                Phase::Free | Phase::Ready | Phase::Transforming => {
                    unreachable!("completion for a slot with nothing in flight {slot}")
                }
            }
        }
        Ok(())
    }

    /// The loop of a sequential device: reads ahead into every free slot,
    /// one block write in flight, in media order.
    pub(super) fn run_loop_sequential(&mut self, feed: &mut Feed<'_>) -> Result<(), Stop> {
        let mut waiting_for_work;
        let mut completions: Vec<(u64, i32)> = Vec::with_capacity(self.slots.len());
        loop {
            // A held write completion whose time has come counts now (and
            // frees its slot for the read ahead below).
            if let Some((slot, result, at)) = self.held {
                if Instant::now() >= at {
                    self.held = None;
                    self.finish_block_write(slot, result)?;
                }
            }
            // 1. Read ahead into every free slot. Only a device with
            // nothing at all to write may block waiting for shared work.
            waiting_for_work = false;
            while !feed.exhausted && self.slots.iter().any(|s| s.phase == Phase::Free) {
                let idle = self.slots.iter().all(|s| s.phase == Phase::Free) && self.held.is_none();
                match self.feed_record(feed, idle)? {
                    Record::Slot(slot) => self.submit_read(slot)?,
                    Record::Wait => {
                        waiting_for_work = true;
                        break;
                    }
                    Record::Exhausted => {}
                }
            }
            self.collect_transforms(false)?;
            self.pump()?;
            let more_to_write = !feed.exhausted || self.next_write < self.gens.len();
            if !more_to_write {
                debug_assert!(self.write_slot.is_none() && self.ring.in_flight() == 0);
                return feed.room_stop.take().map_or(Ok(()), Err);
            }
            // The device is idle while its sources still have data for it:
            // an underrun (not before the first block, when the buffer is
            // filling; not while it waits for work other devices hand back).
            if self.write_slot.is_none()
                && self.held.is_none()
                && self.next_write > 0
                && !waiting_for_work
                && self.idle_since.is_none()
            {
                self.idle_since = Some(Instant::now());
            }
            // 2. Submit, and wait for a completion or the held write's time.
            let mut wait = self
                .held
                .map(|(_, _, at)| at.saturating_duration_since(Instant::now()));
            if self.workers.as_ref().is_some_and(|w| w.pending > 0) {
                if self.ring.in_flight() == 0 && wait.is_none() {
                    self.collect_transforms(true)?;
                    continue;
                }
                wait = Some(wait.map_or(TRANSFORM_POLL, |w| w.min(TRANSFORM_POLL)));
            }
            if self.ring.in_flight() == 0 {
                match wait {
                    Some(wait) => std::thread::sleep(wait),
                    // Waiting for work handed back while still writing.
                    None if waiting_for_work => std::thread::sleep(Duration::from_millis(1)),
                    None => unreachable!("sequential ring: work left, nothing in flight"),
                }
                continue;
            }
            let entered = match wait {
                None => self.ring.submit_and_wait(1),
                Some(wait) => self.ring.submit_and_wait_timeout(1, wait),
            };
            entered.map_err(|e| Stop::Failed {
                error: Fault::Enter(e),
            })?;
            // 3. Copy completions out before acting on them.
            completions.clear();
            self.ring.reap(&mut completions);
            // 4. Act.
            for &(user_data, result) in &completions {
                let slot = user_data as usize;
                match self.slots[slot].phase {
                    Phase::Reading => {
                        self.on_read(slot, result)?;
                    }
                    Phase::Writing => self.on_block_write(slot, result)?,
                    Phase::Free | Phase::Ready | Phase::Transforming => {
                        unreachable!("completion for a slot with nothing in flight {slot}")
                    }
                }
            }
        }
    }

    /// Sequential: submit the next block write in media order if the
    /// device is free and the record is ready.
    pub(super) fn pump(&mut self) -> Result<(), Stop> {
        while self.write_slot.is_none() && self.held.is_none() {
            let gen = self.next_write;
            let Some(slot) = self.ready_slot(gen) else {
                return Ok(());
            };
            if let Some(since) = self.idle_since.take() {
                self.stats.underruns += 1;
                self.stats.underrun_time += since.elapsed();
            }
            if self.transforming() {
                self.place(gen)?;
            }
            let total = self.record_media_bytes(slot);
            self.slots[slot].phase = Phase::Writing;
            self.write_slot = Some(slot);
            match self.device.before_block_write(total) {
                BlockIo::Submit { sqe_offset, bytes } => {
                    assert_eq!(bytes, total, "a device may not change a block's length");
                    let lease = &self.slots[slot].lease;
                    let entry =
                        io::write_fixed(self.device.fd(), lease, 0..total as usize, sqe_offset);
                    return self.push(entry.user_data(slot as u64));
                }
                // Completed without being tried (an emulator's end of medium).
                BlockIo::Done { result } => self.finish_block_write(slot, result)?,
            }
        }
        Ok(())
    }

    /// Sequential: a block write's completion, through the device's hook.
    pub(super) fn on_block_write(&mut self, slot: usize, result: i32) -> Result<(), Stop> {
        let done = self.device.after_block_write(result);
        match done.complete_at {
            Some(at) if at > Instant::now() => {
                self.held = Some((slot, done.result, at));
                Ok(())
            }
            _ => self.finish_block_write(slot, done.result),
        }
    }

    /// Sequential: whether the drive says the block of `slot` reached the
    /// tape although its write reported an error. The label is object 0
    /// and record g (in media order) object g + 1, so after record g the
    /// head is at object g + 2. Only the drive's own position (MTIOCPOS)
    /// is trusted: st's block counter does not count the failed write.
    pub(super) fn block_was_written(&self, slot: usize) -> bool {
        let object_after = (self.slots[slot].gen as u64 + 2 + self.first_sequence) as i64;
        self.device.head_object() == Some(object_after)
    }

    /// Sequential: act on a block write's result. A tape block is written
    /// whole or not at all: a short write means the end of the medium cut
    /// it, and is not continued.
    pub(super) fn finish_block_write(&mut self, slot: usize, result: i32) -> Result<(), Stop> {
        assert_eq!(self.write_slot, Some(slot));
        self.write_slot = None;
        let total = self.record_media_bytes(slot);
        if result == total as i32 {
            self.complete_record(slot);
            self.next_write += 1;
            return Ok(());
        }
        let block = self.next_write as u64 + 1 + self.first_sequence;
        let errno = if result < 0 { -result } else { libc::ENOSPC };
        let error = if result >= 0 {
            Fault::ShortBlock {
                block,
                written: result as u32,
                total,
            }
        } else {
            Fault::Block {
                block,
                error: std::io::Error::from_raw_os_error(errno),
            }
        };
        if errno == libc::ENOSPC && result < 0 && self.block_was_written(slot) {
            // st in variable-block mode answers the write that reaches early
            // warning with ENOSPC after the block is on the tape (seen on
            // the real driver in the VM test bed): it counts as written.
            self.complete_record(slot);
            self.next_write += 1;
            return Err(Stop::Full {
                error,
                physical: true,
            });
        }
        let s = &mut self.slots[slot];
        match self.device.classify(errno) {
            ErrorClass::Retry if s.retries < RETRIES_TRANSIENT_MAX => {
                s.retries += 1;
                s.phase = Phase::Ready;
                self.stats.retries += 1;
                Ok(())
            }
            ErrorClass::Full => Err(Stop::Full {
                error,
                physical: true,
            }),
            // No retries: after a failed tape write the position is unknown.
            _ => Err(Stop::Failed { error }),
        }
    }
}
