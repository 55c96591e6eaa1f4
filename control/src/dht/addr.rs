//! Which addresses a contact may have, and the network prefix its table limits count by.
//!
//! An attacker controlling one network can mint any number of node ids; it cannot mint
//! networks. Counting contacts per prefix (a /24 for IPv4, a configurable prefix for IPv6, where
//! one subscriber usually gets a /48 or /56 and can spread over 2^16 /64s) bounds how much of a
//! table one network can fill.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Bits of an IPv4 address that form its counted prefix (a /24).
pub const IPV4_PREFIX_BITS: u8 = 24;
/// Bits of an IPv6 address that form its counted prefix by default (a /48: one site).
pub const IPV6_PREFIX_BITS: u8 = 48;

/// The network prefix of an address, as counted by the table limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetPrefix {
    /// The first `IPV4_PREFIX_BITS` (or the configured count) of an IPv4 address.
    V4(u32),
    /// The first configured bits of an IPv6 address.
    V6(u128),
}

impl NetPrefix {
    /// The prefix of `ip` with `v4_bits` / `v6_bits` kept. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, what a dual-stack socket reports for an IPv4 peer) count as IPv4, so
    /// one network cannot double its share by appearing in both forms.
    pub fn of(ip: IpAddr, v4_bits: u8, v6_bits: u8) -> NetPrefix {
        match canonical_ip(ip) {
            IpAddr::V4(v4) => NetPrefix::V4(mask32(u32::from(v4), v4_bits)),
            IpAddr::V6(v6) => NetPrefix::V6(mask128(u128::from(v6), v6_bits)),
        }
    }
}

fn mask32(v: u32, bits: u8) -> u32 {
    match bits {
        0 => 0,
        b if b >= 32 => v,
        b => v & !(u32::MAX >> b),
    }
}

fn mask128(v: u128, bits: u8) -> u128 {
    match bits {
        0 => 0,
        b if b >= 128 => v,
        b => v & !(u128::MAX >> b),
    }
}

/// `ip` with an IPv4-mapped IPv6 address turned into the IPv4 address it maps.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// `addr` with its IP made canonical (see [`canonical_ip`]).
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

/// Whether a node could be reached at `addr`: not port 0, not the unspecified, broadcast or a
/// multicast address. Loopback and private ranges are allowed: test and LAN meshes use them.
pub fn is_contact_addr(addr: &SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match canonical_ip(addr.ip()) {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4 == Ipv4Addr::BROADCAST),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_group_by_network() {
        let p = |s: &str| NetPrefix::of(sa(s).ip(), IPV4_PREFIX_BITS, IPV6_PREFIX_BITS);
        assert_eq!(p("192.0.2.7:1"), p("192.0.2.200:2"));
        assert_ne!(p("192.0.2.7:1"), p("192.0.3.7:1"));
        assert_eq!(p("192.0.2.7:1"), p("[::ffff:192.0.2.9]:1"));
        assert_eq!(p("[2001:db8:1:2::1]:1"), p("[2001:db8:1:ffff::9]:1"));
        assert_ne!(p("[2001:db8:1::1]:1"), p("[2001:db8:2::1]:1"));
    }

    #[test]
    fn unusable_addresses_are_rejected() {
        for bad in ["0.0.0.0:4433", "10.0.0.1:0", "224.0.0.1:4433", "255.255.255.255:1", "[::]:1"] {
            assert!(!is_contact_addr(&sa(bad)), "{bad}");
        }
        for good in ["10.0.0.1:4433", "127.0.0.1:4433", "[2001:db8::1]:4433"] {
            assert!(is_contact_addr(&sa(good)), "{good}");
        }
    }
}
