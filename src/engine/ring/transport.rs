//! A pipelined device's transport (NBD): record writes are its requests,
//! its replies come back through the ring's own completions.

use super::*;

impl<'a> Ring<'a> {
    /// Whether the transport still expects replies it can get.
    pub(super) fn transport_waiting(&self) -> bool {
        self.transport
            .as_ref()
            .is_some_and(|t| t.outstanding() > 0 && t.alive())
    }

    /// Push the SQEs the transport wants submitted (a linked pair together).
    pub(super) fn pump_transport(&mut self) -> Result<(), Stop> {
        let Some(transport) = self.transport.as_mut() else {
            return Ok(());
        };
        let mut sqes = std::mem::take(&mut self.transport_sqes);
        let wanted = transport.sqes(&mut sqes);
        let mut outcome = wanted.map_err(|error| Stop::Failed {
            error: Fault::Transport(error),
        });
        if let Err(e) = self.ring.push_all(&mut sqes) {
            outcome = outcome.and(Err(Stop::Failed {
                error: Fault::Enter(e),
            }));
        }
        sqes.clear();
        self.transport_sqes = sqes;
        outcome
    }

    /// A completion of the transport's; a connection beyond saving fails the device.
    pub(super) fn on_transport_cqe(
        &mut self,
        user_data: u64,
        result: i32,
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), Stop> {
        let transport = self
            .transport
            .as_mut()
            .expect("transport completion without a transport");
        transport.on_cqe(user_data, result, done).map_err(|error| {
            transport.abort(&error.to_string());
            Stop::Failed {
                error: Fault::Transport(error),
            }
        })
    }

    pub(super) fn record_media_bytes(&self, slot: usize) -> u32 {
        let g = &self.gens[self.slots[slot].gen];
        HEADER_BYTES as u32 + round_up_block(g.stored_len() as u64) as u32
    }
}
