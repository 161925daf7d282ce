//! `--pcap FILE`: every frame crossing the switch, in the classic pcap format (LINKTYPE_ETHERNET).
//!
//! Writes are buffered and flushed once per event-loop batch; a write error disables the capture
//! with one log line instead of disturbing the data path.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Frames are cut to this many bytes in the capture.
pub const SNAPLEN: u32 = 65535;

pub struct PcapWriter {
    out: Option<BufWriter<File>>,
}

impl PcapWriter {
    pub fn create(path: &Path) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        out.write_all(&h)?;
        Ok(Self { out: Some(out) })
    }

    pub fn record(&mut self, frame: &[u8]) {
        let Some(out) = self.out.as_mut() else { return };
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let cap = frame.len().min(SNAPLEN as usize);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(t.as_secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&(cap as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        if out
            .write_all(&h)
            .and_then(|_| out.write_all(&frame[..cap]))
            .is_err()
        {
            tracing::warn!("pcap: write failed; capture stopped");
            self.out = None;
        }
    }

    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            if out.flush().is_err() {
                tracing::warn!("pcap: flush failed; capture stopped");
                self.out = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_layout() {
        let dir = std::env::temp_dir().join(format!("slipway-pcap-{}", std::process::id()));
        let mut w = PcapWriter::create(&dir).unwrap();
        w.record(&[0xaa; 60]);
        w.flush();
        drop(w);
        let b = std::fs::read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(b.len(), 24 + 16 + 60);
        assert_eq!(&b[0..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 60);
        assert_eq!(&b[40..], &[0xaa; 60][..]);
    }
}
