//! The reading side of `--compress` and `--encrypt`: a record's stored
//! bytes (checked against their CRC32C first) opened with the set's data
//! key when sealed, then back to its payload, in a buffer of exactly the
//! header's `payload_bytes` (`format::codec::decompress` never writes past
//! it: a record that would expand further is refused).
//!
//! Restore and verify do this on each device reader's `Workers`, never on
//! the reader's own thread (which drives the device's ring): a job holds
//! a clone of the stream window its record lies in, so the window is not
//! read into until the job is done (the reader collects every job on
//! `Item::Reclaim`); the worker opens the record in place in the window
//! (AES-GCM decrypts in place: no copy), and writes the payload to its
//! file only once it opened and decompressed (a record that does not is
//! reported and nothing of it is written). A sealed record's CRC32C is
//! not computed on this path: its tag authenticates the same bytes
//! (docs/FORMAT.md section 5.2).

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::format::codec::{self, DecompressError};
use crate::format::seal::{keyring, RecordKey, SealError};
use crate::format::{Codec, DigestRecord, FileInfo, RecordHeader, SetId, BLOCK_BYTES};
use crate::io::Lease;

/// A reader's decompression and opening buffers, kept across records.
#[derive(Default)]
pub(super) struct Inflate {
    buf: Vec<u8>,
    opened: Vec<u8>,
    /// The record key of the last sealed record's (set, run, device).
    key: Option<((SetId, u64, u32), RecordKey)>,
    /// Whether the last record's set is encrypted (its data key known).
    encrypted: Option<(SetId, bool)>,
}

impl Inflate {
    /// The record key that opens `header`'s record.
    fn key(&mut self, header: &RecordHeader) -> Result<&RecordKey, SealError> {
        let id = (
            header.set_id,
            header.transform.seal.run_id,
            header.device_index,
        );
        if self.key.as_ref().is_none_or(|(k, _)| *k != id) {
            let data = keyring::data_key(header.set_id).ok_or(SealError::WrongKey)?;
            self.key = Some((id, data.record_key(id.1, id.2)));
        }
        Ok(&self.key.as_ref().expect("set just above").1)
    }

    /// A record of an encrypted set must be sealed: one in clear was not
    /// written by pbio for that set.
    fn check_sealed(&mut self, header: &RecordHeader) -> Result<(), SealError> {
        if header.transform.seal.is_sealed() {
            return Ok(());
        }
        let set = header.set_id;
        let encrypted = match self.encrypted {
            Some((s, e)) if s == set => e,
            _ => {
                let e = keyring::data_key(set).is_some();
                self.encrypted = Some((set, e));
                e
            }
        };
        if encrypted {
            return Err(SealError::Authentication {
                what: "record in clear in an encrypted set",
            });
        }
        Ok(())
    }

    /// The payload of a record whose stored bytes are `stored`: `stored`
    /// itself when raw and not sealed, else the opened and decompressed
    /// bytes in this reader's buffers (a sealed record is copied before it
    /// is opened: `stored` is borrowed, from a mapping or a window others
    /// read; `payload_in_place` opens without the copy).
    pub(super) fn payload<'b>(
        &'b mut self,
        header: &RecordHeader,
        stored: &'b [u8],
    ) -> Result<&'b [u8], DecompressError> {
        self.check_sealed(header)?;
        if !header.transform.seal.is_sealed() {
            return decoded(&mut self.buf, header, stored);
        }
        let mut opened = std::mem::take(&mut self.opened);
        opened.clear();
        opened.extend_from_slice(stored);
        let result = self
            .key(header)
            .and_then(|k| k.open_payload(header, &mut opened));
        self.opened = opened;
        result?;
        decoded(&mut self.buf, header, &self.opened)
    }

    /// As `payload`, the stored bytes opened where they lie (AES-GCM
    /// decrypts in place): no copy. On an error `stored` is left
    /// unspecified (it is never written anywhere).
    pub(super) fn payload_in_place<'b>(
        &'b mut self,
        header: &RecordHeader,
        stored: &'b mut [u8],
    ) -> Result<&'b [u8], DecompressError> {
        self.check_sealed(header)?;
        if header.transform.seal.is_sealed() {
            self.key(header)?.open_payload(header, stored)?;
        }
        decoded(&mut self.buf, header, stored)
    }

    /// The file info of a header block `decode` accepted as `header`:
    /// opened first when sealed (None when it does not open).
    pub(super) fn file_info(&mut self, header: &RecordHeader, block: &[u8]) -> Option<FileInfo> {
        if !header.transform.seal.is_sealed() {
            self.check_sealed(header).ok()?;
            return RecordHeader::decode_info(block);
        }
        let mut copy = [0u8; BLOCK_BYTES];
        copy.copy_from_slice(block.get(..BLOCK_BYTES)?);
        let key = self.key(header).ok()?;
        key.open_info(header, RecordHeader::info_area_mut(&mut copy))
            .ok()?;
        RecordHeader::decode_info(&copy)
    }
}

/// The payload of `stored` (opened already when sealed): itself when
/// raw, else decompressed into `buf`, exactly `payload_bytes` long.
fn decoded<'b>(
    buf: &'b mut Vec<u8>,
    header: &RecordHeader,
    stored: &'b [u8],
) -> Result<&'b [u8], DecompressError> {
    if header.transform.codec == Codec::Raw {
        return Ok(stored);
    }
    // `payload_bytes` is bounded by the header rules (64 MiB at most)
    // and by the label's chunk (checked before this).
    buf.resize(header.payload_bytes as usize, 0);
    codec::decompress(header.transform.codec, stored, buf)?;
    Ok(buf)
}

/// Worker threads of one device's reader, at most this many.
const WORKERS_MAX: usize = 4;
/// Records queued for the workers at most: the reader waits beyond.
const QUEUE_MAX: usize = 64;

/// A sealed or compressed record for the workers: its stored bytes in a
/// stream window (held until the job is done, so the window is not read
/// into meanwhile), and where its payload goes. With `in_place` the
/// worker opens the record in place in the window: `range` must then be
/// the job's alone from when it is sent until its result is received (no
/// reference to those bytes held or made by anyone else, the reader
/// included: it sends such a job only after the stream's item of that
/// record returned). Without, it copies the stored bytes before opening.
pub(super) struct OpenJob {
    pub(super) position: u64,
    pub(super) header: RecordHeader,
    pub(super) window: Arc<Lease>,
    pub(super) range: Range<usize>,
    /// The restored file the payload goes to.
    pub(super) target: u32,
    /// Its open destination and name; None: verify, nothing written.
    pub(super) destination: Option<(Arc<File>, Arc<str>)>,
    /// Open it in place in the window (see above).
    pub(super) in_place: bool,
    /// A raw record in clear whose CRC32C the worker checks (the reader
    /// did every other check): hashing and checking move off the reader's
    /// thread, as opening does for sealed records. Nothing is written
    /// when it does not match.
    pub(super) crc: bool,
}

/// What a worker made of a record.
pub(super) enum Opened {
    /// Opened, decompressed, hashed and (with a destination) written;
    /// `crc_checked`: its CRC32C was checked by the worker (the reader
    /// counts it as read only now).
    Placed {
        target: u32,
        record: DigestRecord,
        crc_checked: bool,
    },
    /// Its CRC32C (checked by the worker) does not match: nothing written.
    Checksum {
        position: u64,
        header: RecordHeader,
        computed: u32,
    },
    /// It does not open or decompress: nothing written.
    Refused {
        position: u64,
        header: RecordHeader,
        why: DecompressError,
    },
    /// The write to its destination failed (the message names file and
    /// offset).
    WriteFailed(String),
}

/// A device reader's workers: they open and decompress records so that
/// the reader's thread (the one driving the device's ring) does no AEAD
/// or zstd itself. Raw records in clear, and the records of a mapped
/// device (borrowed, not in a window), stay on the reader.
pub(super) struct Workers {
    jobs: Option<crossbeam_channel::Sender<OpenJob>>,
    done: crossbeam_channel::Receiver<Opened>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Jobs sent and not yet received back.
    pending: usize,
}

impl Workers {
    /// Start the workers of device `device_index`'s reader (None when no
    /// thread could start: the reader then opens records itself).
    pub(super) fn start(device_index: u32) -> Option<Workers> {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(WORKERS_MAX);
        let (jobs, queue) = crossbeam_channel::bounded::<OpenJob>(QUEUE_MAX);
        let (done_tx, done) = crossbeam_channel::unbounded::<Opened>();
        let threads: Vec<_> = (0..threads)
            .filter_map(|w| {
                let (queue, done_tx) = (queue.clone(), done_tx.clone());
                std::thread::Builder::new()
                    .name(format!("pbio-o{device_index}.{w}"))
                    .spawn(move || {
                        let mut inflate = Inflate::default();
                        for job in queue {
                            if done_tx.send(inflate.run(job)).is_err() {
                                break;
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        (!threads.is_empty()).then_some(Workers {
            jobs: Some(jobs),
            done,
            threads,
            pending: 0,
        })
    }

    /// Queue a record (waits while `QUEUE_MAX` are queued); what the
    /// workers finished meanwhile goes to `each`.
    pub(super) fn send<E>(
        &mut self,
        job: OpenJob,
        each: impl FnMut(Opened) -> Result<(), E>,
    ) -> Result<(), E> {
        self.jobs
            .as_ref()
            .expect("jobs are sent before the workers stop")
            .send(job)
            .expect("the workers run as long as the reader");
        self.pending += 1;
        self.collect(false, each)
    }

    /// Every record the workers finished, to `each`; with `all`, wait
    /// for every one queued (then no job holds a window any more).
    pub(super) fn collect<E>(
        &mut self,
        all: bool,
        mut each: impl FnMut(Opened) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut result = Ok(());
        while self.pending > 0 {
            let opened = if all {
                self.done.recv().expect("a worker per queued job")
            } else {
                match self.done.try_recv() {
                    Ok(opened) => opened,
                    Err(_) => break,
                }
            };
            self.pending -= 1;
            // Every result is taken even after an error (its window let go).
            let r = each(opened);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queue ends the workers once it is empty.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Inflate {
    /// A worker's record: opened, decompressed, hashed, written; the
    /// window let go before the result goes back.
    fn run(&mut self, job: OpenJob) -> Opened {
        let OpenJob {
            position,
            header,
            window,
            range,
            target,
            destination,
            in_place,
            crc,
        } = job;
        if crc {
            let computed = crate::format::crc32c(window.slice(range.clone()));
            if computed != header.payload_crc {
                drop(window);
                return Opened::Checksum {
                    position,
                    header,
                    computed,
                };
            }
        }
        let payload = if in_place {
            assert!(
                range.start <= range.end && range.end <= window.len(),
                "a job's range lies inside its window"
            );
            // SAFETY: `range` of the window is this job's alone until its
            // result is received (`OpenJob`, `in_place`): the reader sent
            // it only after the stream's item of the record returned and
            // touches no byte of it again, the stream hands each range out
            // once, and it reads into the window again only once every
            // clone of it is dropped (`Item::Reclaim`, then
            // `Arc::get_mut`): no other reference to these bytes exists or
            // is made while this one lives, and no I/O is in flight over
            // them. The assert keeps it inside the slot.
            let stored =
                unsafe { std::slice::from_raw_parts_mut(window.ptr_at(range.start), range.len()) };
            self.payload_in_place(&header, stored)
        } else {
            self.payload(&header, window.slice(range))
        };
        let opened = match payload {
            Err(why) => Opened::Refused {
                position,
                header,
                why,
            },
            Ok(plain) => {
                let hash = crate::format::payload_hash(plain);
                let offset = header.file_offset;
                let written = destination
                    .as_ref()
                    .map_or(Ok(()), |(file, _)| file.write_all_at(plain, offset));
                match written {
                    Ok(()) => Opened::Placed {
                        target,
                        record: (offset, header.payload_bytes, hash),
                        crc_checked: crc,
                    },
                    Err(e) => {
                        let name = destination.as_ref().map_or("", |(_, n)| n);
                        Opened::WriteFailed(format!("write {name} at offset {offset}: {e}"))
                    }
                }
            }
        };
        drop(window);
        opened
    }
}
