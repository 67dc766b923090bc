//! What every strategy shares: validated inputs, set totals, and the running
//! state of each device (bytes and media bytes assigned, share, capacity).

use super::{Balance, DeviceSlot, FileItem, Options, Order, PlanError, CHUNK_BYTES_MIN};

/// Validated options and totals of one planning run.
pub(super) struct Context {
    pub device_count: usize,
    pub chunk_bytes: u64,
    pub order: Order,
    pub balance: Balance,
    /// Sum of all files' stored bytes.
    pub total_bytes: u128,
    /// T = total / N, rounded down (saturated to u64; a set that large
    /// cannot fit anyway).
    pub threshold_bytes: u64,
    /// Sum of the media bytes of whole files (`FileItem::media`). Exact for
    /// any plan, because segments split files on chunk boundaries only.
    pub media_total: u128,
    pub capacity_total: u128,
}

impl Context {
    pub fn new(
        files: &[FileItem],
        devices: &[DeviceSlot],
        opts: &Options,
    ) -> Result<Context, PlanError> {
        if devices.is_empty() {
            return Err(PlanError::NoDevices);
        }
        if !opts.chunk_bytes.is_power_of_two() || opts.chunk_bytes < CHUNK_BYTES_MIN {
            return Err(PlanError::BadChunk(opts.chunk_bytes));
        }
        if opts.balance == Balance::Time {
            if let Some(index) = devices
                .iter()
                .position(|d| d.rate_bytes_per_sec.unwrap_or(0) == 0)
            {
                return Err(PlanError::MissingRate {
                    device: index as u32,
                });
            }
        }
        assert!(
            devices.len() <= u32::MAX as usize,
            "device ids are u32: at most u32::MAX devices"
        );
        // u32::MAX itself is never a file id, so DEVICE_NONE-like sentinels stay free.
        assert!(
            files.len() < u32::MAX as usize,
            "file ids are u32: at most u32::MAX - 1 files"
        );

        let mut total_bytes: u128 = 0;
        let mut media_total: u128 = 0;
        for file in files {
            total_bytes += u128::from(file.stored_bytes());
            media_total += file.media(0, file.size_bytes, opts.chunk_bytes);
        }
        let capacity_total: u128 = devices.iter().map(|d| u128::from(d.capacity_bytes)).sum();
        let threshold = total_bytes / devices.len() as u128;
        Ok(Context {
            device_count: devices.len(),
            chunk_bytes: opts.chunk_bytes,
            order: opts.order,
            balance: opts.balance,
            total_bytes,
            threshold_bytes: u64::try_from(threshold).unwrap_or(u64::MAX),
            media_total,
            capacity_total,
        })
    }

    /// Fresh device states with their initial shares: T each (bytes), or
    /// `total` split in proportion to the rates (time).
    pub fn device_states(&self, devices: &[DeviceSlot]) -> Vec<DeviceState> {
        let mut states: Vec<DeviceState> = devices
            .iter()
            .map(|d| {
                let rate = d.rate_bytes_per_sec.filter(|&r| r > 0);
                DeviceState {
                    capacity_bytes: d.capacity_bytes,
                    rate_bytes_per_sec: rate,
                    weight: match self.balance {
                        Balance::Bytes => 1,
                        // Context::new checked that every rate is > 0.
                        Balance::Time => rate.unwrap_or(1),
                    },
                    share_bytes: u128::from(self.threshold_bytes),
                    assigned_bytes: 0,
                    media_bytes: 0,
                    segments: 0,
                }
            })
            .collect();
        if self.balance == Balance::Time {
            distribute(&mut states, self.total_bytes, |_| true);
        }
        states
    }

    /// Largest multiple of the chunk not above `bytes` (may be 0).
    pub fn chunk_floor(&self, bytes: u64) -> u64 {
        bytes - bytes % self.chunk_bytes
    }

    /// Media bytes of a full record: one header plus one chunk of payload.
    pub fn record_media_bytes(&self) -> u64 {
        super::HEADER_BYTES + self.chunk_bytes
    }
}

/// One device while a plan is being built.
#[derive(Clone, Debug)]
pub(super) struct DeviceState {
    pub capacity_bytes: u64,
    /// Known rate (> 0), for the finish-time prediction.
    pub rate_bytes_per_sec: Option<u64>,
    /// Weight of this device in a share: its rate (time) or 1 (bytes).
    pub weight: u64,
    /// Payload bytes this device should end with (Fill).
    pub share_bytes: u128,
    pub assigned_bytes: u64,
    pub media_bytes: u64,
    pub segments: u64,
}

impl DeviceState {
    /// Media bytes still free.
    pub fn capacity_room_bytes(&self) -> u64 {
        self.capacity_bytes - self.media_bytes
    }

    /// Share minus assigned payload bytes; negative when over its share.
    pub fn room_bytes(&self) -> i128 {
        self.share_bytes as i128 - i128::from(self.assigned_bytes)
    }

    /// Whether a piece with this media footprint fits.
    pub fn fits(&self, media: u128) -> bool {
        media <= u128::from(self.capacity_room_bytes())
    }

    /// Assign a segment storing `length` bytes with footprint `media` (which fits).
    pub fn take(&mut self, length: u64, media: u128) {
        assert!(self.fits(media), "take() of a segment that does not fit");
        // media <= capacity room <= u64::MAX, and stored length <= media.
        self.media_bytes += media as u64;
        self.assigned_bytes += length;
        self.segments += 1;
    }
}

/// Set `share = assigned + portion` on the devices `open` selects, where the
/// portions split `amount` in proportion to the devices' weights (cumulative
/// rounding down, so the portions add up to `amount` exactly); the other
/// devices get `share = assigned`. Nothing happens if no device is open.
pub(super) fn distribute(
    states: &mut [DeviceState],
    amount: u128,
    open: impl Fn(&DeviceState) -> bool,
) {
    let weight_total: u128 = states
        .iter()
        .filter(|s| open(s))
        .map(|s| u128::from(s.weight))
        .sum();
    if weight_total == 0 {
        return;
    }
    // Keep every weight and the total below 2^64 so `mul_div_floor` cannot
    // overflow: shift them down (keeping each open device at >= 1).
    let shift = (128 - weight_total.leading_zeros()).saturating_sub(63);
    let scaled = |s: &DeviceState| -> u128 {
        if open(s) {
            (u128::from(s.weight) >> shift).max(1)
        } else {
            0
        }
    };
    let scaled_total: u128 = states.iter().map(scaled).sum();
    assert!(scaled_total < 1 << 64);
    let mut cumulative: u128 = 0;
    let mut given: u128 = 0;
    for state in states.iter_mut() {
        cumulative += scaled(state);
        let upto = mul_div_floor(amount, cumulative, scaled_total);
        let portion = upto - given;
        given = upto;
        state.share_bytes = u128::from(state.assigned_bytes) + portion;
    }
    assert_eq!(given, amount);
}

/// floor(amount * part / whole) without overflow, for part <= whole < 2^64.
fn mul_div_floor(amount: u128, part: u128, whole: u128) -> u128 {
    assert!(whole > 0 && part <= whole && whole < 1 << 64);
    let quotient = amount / whole;
    let remainder = amount % whole;
    // quotient * part <= amount; remainder * part < whole^2 < 2^128.
    quotient * part + remainder * part / whole
}
