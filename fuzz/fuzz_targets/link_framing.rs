#![no_main]
//! Guest-link stream framings (QEMU's 4-byte big-endian and vpnkit/stdio's 2-byte little-endian
//! length prefixes) fed from memory in arbitrary read sizes. Input: byte 0 picks the framing and
//! the frame budget per call, bytes 1..9 are read sizes (×64 bytes), the rest is the stream.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let le16 = data[0] & 1 == 1;
    let budget = usize::from(data[0] >> 1) + 1;
    slipway::link::fuzzing::stream_framing(le16, &data[9..], &data[1..9], budget);
});
