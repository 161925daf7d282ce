#![no_main]
//! The TAP link's vnet header (checksum offload): datagrams `[len: u16 LE][bytes]` after a
//! first byte that picks the header length, read through a real socketpair. See
//! `slipway::link::fuzzing::tap_vnet`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| slipway::link::fuzzing::tap_vnet(data));
