//! The virtual L2 switch: one port per guest link, MAC learning, flooding.
//!
//! Theory of operation: every frame from a guest port teaches the switch that its source MAC
//! lives on that port. Frames for the gateway's MAC go to the gateway; frames for a learned MAC go
//! to that port; broadcast, multicast and unknown unicast are flooded to every other port (and
//! broadcast/multicast also to the gateway). A port that goes down forgets its MACs; a guest that
//! reconnects is learned again from its first frame.
//!
//! Limits: [`MAX_MACS`] learned addresses per network (a guest spoofing source MACs fills the table
//! and further new MACs are not learned, counted by the caller); [`MAX_PORTS`] ports.

use crate::config::Mac;
use crate::hash::{fast_map_with_capacity, FastMap};

pub const MAX_MACS: usize = 4096;
pub const MAX_PORTS: usize = 1024;

/// What the switch decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    /// Deliver to the gateway (frame for our MAC, or broadcast/multicast).
    pub to_gateway: bool,
    /// Deliver to one other guest port.
    pub to_port: Option<u16>,
    /// Flood to all other guest ports.
    pub flood: bool,
}

#[derive(Default)]
pub struct Switch {
    macs: FastMap<Mac, u16>,
    ports: Vec<bool>,
    gateway_mac: Mac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnError {
    /// The source MAC is a group address or the gateway's own.
    BadSourceMac,
    TableFull,
}

impl Switch {
    pub fn new(gateway_mac: Mac) -> Self {
        Self {
            macs: fast_map_with_capacity(64),
            ports: Vec::new(),
            gateway_mac,
        }
    }

    /// Open a port for a new guest link. None when [`MAX_PORTS`] are open.
    pub fn port_up(&mut self) -> Option<u16> {
        if let Some(i) = self.ports.iter().position(|up| !up) {
            self.ports[i] = true;
            return Some(i as u16);
        }
        if self.ports.len() >= MAX_PORTS {
            return None;
        }
        self.ports.push(true);
        Some((self.ports.len() - 1) as u16)
    }

    pub fn port_down(&mut self, port: u16) {
        if let Some(p) = self.ports.get_mut(usize::from(port)) {
            *p = false;
        }
        self.macs.retain(|_, p| *p != port);
    }

    pub fn ports_up(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, up)| **up)
            .map(|(i, _)| i as u16)
    }

    pub fn port_of(&self, mac: &Mac) -> Option<u16> {
        self.macs.get(mac).copied()
    }

    /// Learn `src` on `port` and decide where a frame to `dst` goes.
    pub fn forward(&mut self, port: u16, src: Mac, dst: Mac) -> Result<Forwarding, LearnError> {
        if src[0] & 1 == 1 || src == self.gateway_mac {
            return Err(LearnError::BadSourceMac);
        }
        let known = self.macs.len();
        match self.macs.get_mut(&src) {
            Some(p) => *p = port,
            None if known < MAX_MACS => {
                self.macs.insert(src, port);
            }
            None => return Err(LearnError::TableFull),
        }
        if dst == self.gateway_mac {
            return Ok(Forwarding {
                to_gateway: true,
                to_port: None,
                flood: false,
            });
        }
        if dst[0] & 1 == 1 {
            return Ok(Forwarding {
                to_gateway: true,
                to_port: None,
                flood: true,
            });
        }
        match self.macs.get(&dst) {
            Some(&p) if p == port => Ok(Forwarding {
                to_gateway: false,
                to_port: None,
                flood: false,
            }),
            Some(&p) => Ok(Forwarding {
                to_gateway: false,
                to_port: Some(p),
                flood: false,
            }),
            None => Ok(Forwarding {
                to_gateway: false,
                to_port: None,
                flood: true,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const GW: Mac = [0x5a, 0, 0, 0, 0, 1];
    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn learns_floods_and_forwards() {
        let mut s = Switch::new(GW);
        let pa = s.port_up().unwrap();
        let pb = s.port_up().unwrap();
        // Unknown unicast floods, broadcast goes to gateway and floods.
        assert_eq!(
            s.forward(pa, A, B).unwrap(),
            Forwarding {
                to_gateway: false,
                to_port: None,
                flood: true
            }
        );
        assert_eq!(
            s.forward(pb, B, [0xff; 6]).unwrap(),
            Forwarding {
                to_gateway: true,
                to_port: None,
                flood: true
            }
        );
        assert_eq!(s.forward(pa, A, B).unwrap().to_port, Some(pb));
        assert_eq!(
            s.forward(pb, B, GW).unwrap(),
            Forwarding {
                to_gateway: true,
                to_port: None,
                flood: false
            }
        );
        assert_eq!(s.port_of(&A), Some(pa));
        s.port_down(pa);
        assert_eq!(s.port_of(&A), None);
        // The freed port number is reused; the guest is learned again on its new port.
        let pa2 = s.port_up().unwrap();
        assert_eq!(pa2, pa);
        s.forward(pa2, A, GW).unwrap();
        assert_eq!(s.port_of(&A), Some(pa2));
    }

    #[test]
    fn rejects_group_and_gateway_sources_and_bounds_table() {
        let mut s = Switch::new(GW);
        let p = s.port_up().unwrap();
        assert_eq!(s.forward(p, [0xff; 6], GW), Err(LearnError::BadSourceMac));
        assert_eq!(s.forward(p, GW, A), Err(LearnError::BadSourceMac));
        for i in 0..MAX_MACS {
            let m = [2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            s.forward(p, m, GW).unwrap();
        }
        assert_eq!(
            s.forward(p, [2, 1, 1, 1, 1, 1], GW),
            Err(LearnError::TableFull)
        );
    }
}
