//! Drop-in front-ends: other tools' command lines translated onto slipway's one configuration
//! (ARCHITECTURE.md D6). Nothing here implements networking; each front-end only builds the
//! `serve` options its users' tools expect.

pub mod cni;
pub mod gvproxy;
pub mod slirp4netns;
