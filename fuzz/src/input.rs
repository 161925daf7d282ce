//! Reading a fuzz input as a stream of small fields. Every read succeeds: past the end, bytes
//! read as absent (`None`) and slices come back short, so any input is a valid (maybe empty)
//! script.

pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, or None at the end.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// The next byte, or 0 at the end.
    pub fn byte_or_zero(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    /// A little-endian u16 (missing bytes read as 0).
    pub fn u16_le(&mut self) -> u16 {
        let lo = self.byte_or_zero();
        let hi = self.byte_or_zero();
        u16::from_le_bytes([lo, hi])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A record: a little-endian u16 length, then up to that many bytes.
    pub fn record(&mut self) -> &'a [u8] {
        let len = usize::from(self.u16_le());
        self.take(len)
    }
}

/// Append a record as [`Cursor::record`] reads it (for seeds and tests).
pub fn push_record(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("records are at most 65535 bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_without_failing() {
        let mut c = Cursor::new(&[3, 0, b'a', b'b']);
        assert_eq!(c.record(), b"ab");
        assert!(c.is_empty());
        assert_eq!(c.byte(), None);
        assert_eq!(c.u16_le(), 0);
        assert_eq!(c.take(5), b"");
        let mut out = Vec::new();
        push_record(&mut out, b"xyz");
        assert_eq!(Cursor::new(&out).record(), b"xyz");
    }
}
