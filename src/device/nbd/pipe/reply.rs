//! The receiving side of the pipe: replies parsed out of the stage (or
//! received straight into a read's buffer), matched to their requests
//! and completed.

use super::*;

impl<'d> Pipe<'d> {
    /// Tests and fuzzing: mark every queued request sent (as `sqes` does
    /// when it gathers them, without a send) and hand the pipe `bytes` as
    /// if one receive had returned them: into the stage, or straight into
    /// a read's buffer where `sqes` would have received them there.
    /// Returns the first protocol error.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), TransportError> {
        while let Some(h) = self.queue.pop_front() {
            self.reqs[h as usize].as_mut().expect("queued request").sent = true;
        }
        if let Some(f) = &self.fatal {
            return Err(f.clone());
        }
        while !bytes.is_empty() {
            let n = match self.rx {
                Rx::Data {
                    handle,
                    at,
                    left,
                    done: last,
                } if self.lo == self.hi && left > 0 => {
                    let n = left.min(bytes.len());
                    let req = self.req(handle).expect("data state for a live request");
                    // SAFETY: [at, at + n) is within the request's buffer
                    // (at + left <= len, checked when the chunk was accepted).
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), req.buf.add(at), n) };
                    self.rx = Rx::Data {
                        handle,
                        at: at + n,
                        left: left - n,
                        done: last,
                    };
                    n
                }
                _ => {
                    if self.lo > 0 {
                        self.stage.copy_within(self.lo..self.hi, 0);
                        self.hi -= self.lo;
                        self.lo = 0;
                    }
                    let n = (STAGE_BYTES - self.hi).min(bytes.len());
                    self.stage[self.hi..self.hi + n].copy_from_slice(&bytes[..n]);
                    self.hi += n;
                    n
                }
            };
            if n == 0 {
                let why = "the stage is full and nothing parses".to_string();
                return Err(self.fail(TransportError::Protocol(why)));
            }
            bytes = &bytes[n..];
            if let Err(e) = self.parse(done) {
                return Err(self.fail(TransportError::Protocol(e)));
            }
        }
        Ok(())
    }
    /// Parse everything the stage holds.
    pub(super) fn parse(&mut self, done: &mut Vec<(u64, i32)>) -> Result<(), String> {
        loop {
            match self.rx {
                Rx::Data {
                    handle,
                    at,
                    left,
                    done: last,
                } => {
                    if left > 0 {
                        let n = left.min(self.hi - self.lo);
                        if n == 0 {
                            return Ok(());
                        }
                        let req = self.req(handle).expect("data state for a live request");
                        // SAFETY: [at, at + n) is within the request's
                        // buffer (checked when the chunk was accepted), which
                        // the caller keeps until the request completes; the
                        // stage does not overlap it.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                self.stage.as_ptr().add(self.lo),
                                req.buf.add(at),
                                n,
                            )
                        };
                        self.lo += n;
                        self.rx = Rx::Data {
                            handle,
                            at: at + n,
                            left: left - n,
                            done: last,
                        };
                        continue;
                    }
                    self.rx = Rx::Head;
                    if last {
                        self.finish(handle, done)?;
                    }
                }
                Rx::Head => {
                    let have = self.hi - self.lo;
                    if have < 4 {
                        return Ok(());
                    }
                    let b = &self.stage[self.lo..self.hi];
                    let need = proto::reply_head_bytes(u32::from_be_bytes(
                        b[..4].try_into().expect("4 bytes"),
                    ))
                    .map_err(|e| e.to_string())?;
                    if have < need {
                        return Ok(());
                    }
                    let head = proto::decode_reply_head(&b[..need], self.structured)
                        .map_err(|e| e.to_string())?;
                    self.lo += need;
                    self.on_head(head, done)?;
                }
                Rx::DataOffset { handle, flags, len } => {
                    if self.hi - self.lo < 8 {
                        return Ok(());
                    }
                    let o = u64::from_be_bytes(
                        self.stage[self.lo..self.lo + 8]
                            .try_into()
                            .expect("8 bytes"),
                    );
                    self.lo += 8;
                    let req = self.live(handle)?;
                    let at = proto::chunk_within(o, len as u64, req.offset, req.len)
                        .map_err(|e| e.to_string())?;
                    self.reqs[handle as usize].as_mut().expect("live").covered += len as u64;
                    self.rx = Rx::Data {
                        handle,
                        at,
                        left: len,
                        done: flags & proto::REPLY_FLAG_DONE != 0,
                    };
                }
                Rx::Chunk {
                    handle,
                    flags,
                    kind,
                    len,
                } => {
                    if self.hi - self.lo < len {
                        return Ok(());
                    }
                    let data = self.stage[self.lo..self.lo + len].to_vec();
                    self.lo += len;
                    self.rx = Rx::Head;
                    self.on_chunk(handle, flags, kind, &data, done)?;
                }
            }
        }
    }

    pub(super) fn live(&self, handle: u64) -> Result<&Req, String> {
        match self.req(handle) {
            Some(r) if r.sent => Ok(r),
            _ => Err(format!(
                "reply for handle {handle:#x}, which is not awaiting one"
            )),
        }
    }

    pub(super) fn on_head(
        &mut self,
        head: ReplyHead,
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), String> {
        match head {
            ReplyHead::Simple { error, handle } => {
                let req = self.live(handle)?;
                if error != 0 {
                    self.complete(handle, -proto::errno_of(error), done);
                } else if req.command == proto::CMD_READ && req.len > 0 {
                    let left = req.len as usize;
                    self.reqs[handle as usize].as_mut().expect("live").covered = left as u64;
                    self.rx = Rx::Data {
                        handle,
                        at: 0,
                        left,
                        done: true,
                    };
                } else {
                    self.finish(handle, done)?;
                }
            }
            ReplyHead::Structured {
                flags,
                kind,
                handle,
                length,
            } => {
                let req = self.live(handle)?;
                if kind == proto::REPLY_TYPE_OFFSET_DATA {
                    if req.command != proto::CMD_READ {
                        return Err(format!(
                            "read data in the reply to a non-read (handle {handle:#x})"
                        ));
                    }
                    if length < 8 {
                        return Err(format!("data chunk of {length} bytes"));
                    }
                    self.rx = Rx::DataOffset {
                        handle,
                        flags,
                        len: length as usize - 8,
                    };
                } else {
                    self.rx = Rx::Chunk {
                        handle,
                        flags,
                        kind,
                        len: length as usize,
                    };
                }
            }
        }
        Ok(())
    }

    /// A structured chunk other than read data, whole.
    pub(super) fn on_chunk(
        &mut self,
        handle: u64,
        flags: u16,
        kind: u16,
        data: &[u8],
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), String> {
        let req = self.live(handle)?;
        let (offset, len) = (req.offset, req.len);
        match kind {
            proto::REPLY_TYPE_NONE => {
                if !data.is_empty() {
                    return Err(format!("NONE chunk of {} bytes", data.len()));
                }
                if flags & proto::REPLY_FLAG_DONE == 0 {
                    return Err("NONE chunk without the DONE flag".into());
                }
            }
            proto::REPLY_TYPE_OFFSET_HOLE => {
                if req.command != proto::CMD_READ {
                    return Err(format!(
                        "a hole in the reply to a non-read (handle {handle:#x})"
                    ));
                }
                let (o, n) = proto::decode_hole_chunk(data).map_err(|e| e.to_string())?;
                let at =
                    proto::chunk_within(o, n as u64, offset, len).map_err(|e| e.to_string())?;
                // SAFETY: [at, at + n) lies within the request's buffer
                // (chunk_within), which the caller keeps until completion.
                unsafe { std::ptr::write_bytes(req.buf.add(at), 0, n as usize) };
                self.reqs[handle as usize].as_mut().expect("live").covered += n as u64;
            }
            k if proto::is_error_chunk(k) => {
                let (e, _msg) = proto::decode_error_chunk(data).map_err(|e| e.to_string())?;
                self.reqs[handle as usize].as_mut().expect("live").error = Some(proto::errno_of(e));
            }
            k => return Err(format!("unexpected structured reply chunk type {k}")),
        }
        if flags & proto::REPLY_FLAG_DONE != 0 {
            self.finish(handle, done)?;
        }
        Ok(())
    }

    /// The last reply of `handle` arrived: check it and complete it.
    pub(super) fn finish(&mut self, handle: u64, done: &mut Vec<(u64, i32)>) -> Result<(), String> {
        let req = self.live(handle)?;
        let result = match req.error {
            Some(errno) => -errno,
            None if req.command == proto::CMD_READ && req.covered != req.len as u64 => {
                return Err(format!(
                    "read reply for handle {handle:#x} covered {} of {} bytes",
                    req.covered, req.len
                ))
            }
            None => req.len as i32,
        };
        self.complete(handle, result, done);
        Ok(())
    }

    pub(super) fn complete(&mut self, handle: u64, result: i32, done: &mut Vec<(u64, i32)>) {
        self.reqs[handle as usize] = None;
        self.outstanding -= 1;
        done.push((handle, result));
    }
}
