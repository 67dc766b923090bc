//! SCSI commands through the sg driver's SG_IO ioctl (scsi/sg.h): the one
//! header layout and the one ioctl, for the tape drive (READ BLOCK
//! LIMITS through its st node) and the medium changer (SMC-3 on /dev/sgN).

use std::os::fd::RawFd;

/// SG_IO (scsi/sg.h).
pub(crate) const SG_IO: libc::c_ulong = 0x2285;
const SG_DXFER_NONE: libc::c_int = -1;
const SG_DXFER_FROM_DEV: libc::c_int = -3;

/// `struct sg_io_hdr` (scsi/sg.h), interface 'S', 88 bytes on x86_64.
#[repr(C)]
pub(crate) struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: libc::c_uchar,
    mx_sb_len: libc::c_uchar,
    iovec_count: libc::c_ushort,
    dxfer_len: libc::c_uint,
    dxferp: *mut libc::c_void,
    cmdp: *const libc::c_uchar,
    sbp: *mut libc::c_uchar,
    timeout: libc::c_uint,
    flags: libc::c_uint,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: libc::c_uchar,
    masked_status: libc::c_uchar,
    msg_status: libc::c_uchar,
    sb_len_wr: libc::c_uchar,
    host_status: libc::c_ushort,
    driver_status: libc::c_ushort,
    resid: libc::c_int,
    duration: libc::c_uint,
    info: libc::c_uint,
}

/// What the device answered to one command.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reply {
    /// SAM status.
    pub status: u8,
    pub host_status: u16,
    pub driver_status: u16,
    /// Bytes of sense data written.
    pub sense_bytes: usize,
    /// Bytes of `data` received.
    pub received: usize,
}

/// One command: `cdb` sent, `data` receiving what the device returns
/// (empty: no data phase), `sense` the sense data. Err: the ioctl itself
/// failed (the command's own status is in the `Reply`).
pub(crate) fn command(
    fd: RawFd,
    cdb: &[u8],
    data: &mut [u8],
    sense: &mut [u8],
    timeout_ms: u32,
) -> std::io::Result<Reply> {
    let mut hdr = SgIoHdr {
        interface_id: b'S' as libc::c_int,
        dxfer_direction: if data.is_empty() {
            SG_DXFER_NONE
        } else {
            SG_DXFER_FROM_DEV
        },
        cmd_len: cdb.len() as u8,
        mx_sb_len: sense.len().min(255) as u8,
        iovec_count: 0,
        dxfer_len: data.len() as u32,
        dxferp: data.as_mut_ptr().cast(),
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: SG_IO reads the header and, until it returns (the call is
    // synchronous), the CDB, the data buffer (dxfer_len bytes) and the
    // sense buffer (mx_sb_len bytes) it points to; all are borrows of
    // this frame with at least those lengths.
    let rc = unsafe { libc::ioctl(fd, SG_IO as _, &mut hdr as *mut SgIoHdr) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let resid = usize::try_from(hdr.resid).unwrap_or(0).min(data.len());
    Ok(Reply {
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        sense_bytes: (hdr.sb_len_wr as usize).min(sense.len()),
        received: data.len() - resid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_matches_the_kernel() {
        assert_eq!(SG_IO, 0x2285);
        assert_eq!(std::mem::size_of::<SgIoHdr>(), 88);
        assert_eq!(std::mem::offset_of!(SgIoHdr, usr_ptr), 56);
        assert_eq!(std::mem::offset_of!(SgIoHdr, info), 80);
    }
}
