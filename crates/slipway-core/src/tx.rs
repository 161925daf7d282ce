//! The outgoing frame queue of one batch.
//!
//! Engines build frames for guests directly in one reusable arena (peeking host-socket data
//! straight into the payload area), and record for each frame which switch port it goes to. The
//! driver drains the queue once per batch, handing each port its frames in order, then clears it.
//! Capacity grows to the largest batch seen and is then reused: no allocation in steady state.
//!
//! Limits: [`TX_BUDGET`] bytes per batch; engines that have more to send stop producing
//! (`over_budget`) and resume after the flush.

use crate::offload::PartialCsum;

/// Where a frame goes on the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxDest {
    /// One guest port.
    Port(u16),
    /// Every port except the given one (broadcast, multicast, unknown unicast).
    Flood { except: Option<u16> },
}

#[derive(Debug, Clone, Copy)]
pub struct TxFrame {
    pub dest: TxDest,
    start: u32,
    len: u32,
    /// The TCP checksum left for the link to finish (only to ports that accept it).
    csum: Option<PartialCsum>,
}

/// Bytes of frames produced per batch before engines pause.
pub const TX_BUDGET: usize = 4 << 20;

/// The arena is a buffer that only grows: `used` bytes of it hold this batch's frames, and the
/// rest is scratch that reservations hand out without clearing (engines overwrite every byte of
/// a frame they commit). Growing zeroes new memory once; reusing it costs nothing.
#[derive(Default)]
pub struct TxQueue {
    arena: Vec<u8>,
    used: usize,
    frames: Vec<TxFrame>,
    reserved_at: usize,
    /// Ports whose links finish checksums themselves (indexed by port).
    offload: Vec<bool>,
}

impl TxQueue {
    pub fn new() -> Self {
        Self {
            arena: vec![0; TX_BUDGET + (1 << 17)],
            used: 0,
            frames: Vec::with_capacity(1024),
            reserved_at: 0,
            offload: Vec::new(),
        }
    }

    /// Whether frames to `port` may carry a partial checksum ([`crate::offload`]).
    pub fn set_offload(&mut self, port: u16, on: bool) {
        let i = usize::from(port);
        if self.offload.len() <= i {
            self.offload.resize(i + 1, false);
        }
        self.offload[i] = on;
    }

    /// Whether a frame to `dest` may carry a partial checksum: one port that accepts them.
    #[inline]
    pub fn offloads(&self, dest: TxDest) -> bool {
        match dest {
            TxDest::Port(p) => self.offload.get(usize::from(p)).copied().unwrap_or(false),
            TxDest::Flood { .. } => false,
        }
    }

    /// Reserve `len` bytes (with stale contents) after the frames queued so far, for one frame or
    /// several built back to back; fill them, [`commit_at`](Self::commit_at), then
    /// [`finish`](Self::finish).
    pub fn reserve(&mut self, len: usize) -> &mut [u8] {
        let start = self.used;
        if self.arena.len() < start + len {
            self.arena.resize(start + len, 0);
        }
        self.reserved_at = start;
        self.used = start + len;
        &mut self.arena[start..start + len]
    }

    /// The last reservation again (after the caller's borrow of it ended).
    pub fn reserve_again(&mut self) -> &mut [u8] {
        &mut self.arena[self.reserved_at..self.used]
    }

    /// Record a frame of `len` bytes starting `offset` bytes into the last reservation.
    pub fn commit_at(&mut self, dest: TxDest, offset: usize, len: usize) {
        self.commit_with(dest, offset, len, None);
    }

    /// [`commit_at`](Self::commit_at) for a frame whose checksum `csum` the link finishes; only
    /// for a `dest` that [`offloads`](Self::offloads).
    pub fn commit_with(
        &mut self,
        dest: TxDest,
        offset: usize,
        len: usize,
        csum: Option<PartialCsum>,
    ) {
        let start = self.reserved_at + offset;
        debug_assert!(start + len <= self.used);
        debug_assert!(csum.is_none() || self.offloads(dest));
        self.frames.push(TxFrame {
            dest,
            start: start as u32,
            len: len as u32,
            csum,
        });
    }

    /// Finish a reservation, keeping only the first `used` bytes of it.
    pub fn finish(&mut self, used: usize) {
        self.used = self.reserved_at + used;
    }

    /// Reserve, fill with `build` and commit one frame of at most `max_len` bytes; `build` returns
    /// the length used (0 = nothing to send).
    pub fn push_with(
        &mut self,
        dest: TxDest,
        max_len: usize,
        build: impl FnOnce(&mut [u8]) -> usize,
    ) {
        let buf = self.reserve(max_len);
        let used = build(buf);
        if used > 0 {
            self.commit_at(dest, 0, used);
        }
        self.finish(used);
    }

    /// Copy a whole frame in.
    pub fn push_copy(&mut self, dest: TxDest, frame: &[u8]) {
        self.push_with(dest, frame.len(), |b| {
            b.copy_from_slice(frame);
            frame.len()
        });
    }

    pub fn over_budget(&self) -> bool {
        self.used >= TX_BUDGET
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn frames(&self) -> impl Iterator<Item = (TxDest, &[u8])> + '_ {
        self.frames.iter().map(|f| {
            (
                f.dest,
                &self.arena[f.start as usize..(f.start + f.len) as usize],
            )
        })
    }

    /// [`frames`](Self::frames) with each frame's partial checksum, if it has one.
    pub fn frames_with_csum(
        &self,
    ) -> impl Iterator<Item = (TxDest, &[u8], Option<PartialCsum>)> + '_ {
        self.frames.iter().map(|f| {
            (
                f.dest,
                &self.arena[f.start as usize..(f.start + f.len) as usize],
                f.csum,
            )
        })
    }

    pub fn clear(&mut self) {
        self.used = 0;
        self.frames.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_commit_and_iterate() {
        let mut q = TxQueue::new();
        q.push_copy(TxDest::Port(1), b"first");
        let buf = q.reserve(100);
        buf[..3].copy_from_slice(b"abc");
        buf[50..52].copy_from_slice(b"de");
        q.commit_at(TxDest::Port(2), 0, 3);
        q.commit_at(TxDest::Flood { except: None }, 50, 2);
        q.finish(52);
        q.push_with(TxDest::Port(3), 10, |b| {
            b[0] = b'z';
            1
        });
        q.push_with(TxDest::Port(3), 10, |_| 0);
        let got: Vec<_> = q.frames().map(|(d, f)| (d, f.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (TxDest::Port(1), b"first".to_vec()),
                (TxDest::Port(2), b"abc".to_vec()),
                (TxDest::Flood { except: None }, b"de".to_vec()),
                (TxDest::Port(3), b"z".to_vec()),
            ]
        );
        q.clear();
        assert!(q.is_empty());
    }
}
