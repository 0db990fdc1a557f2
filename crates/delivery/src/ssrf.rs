//! The outbound safety guard: which IP addresses a delivery may connect to.
//!
//! Loopback, private, link-local, CGNAT, multicast, unspecified, documentation and other
//! special-purpose ranges are refused — including their IPv4-mapped, NAT64 and 6to4 IPv6
//! forms — unless an operator allowed them with `--allow-target`; ranges an operator
//! denied with `--deny-target` are refused whatever else allows them. The check runs on the
//! resolved address at connect time ([`GuardedResolver`]) and the connection goes to
//! exactly the vetted address, so a DNS answer cannot change between check and use.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use ipnet::IpNet;

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub addr: IpAddr,
    pub range: &'static str,
    /// Refused by `--deny-target` (which `--allow-target` cannot undo).
    pub denied: bool,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.denied {
            return write!(
                f,
                "target address {} is in a range denied by --deny-target, which deliveries never reach",
                self.addr
            );
        }
        write!(
            f,
            "target address {} is in a {} range, which deliveries may not reach (allow it with --allow-target)",
            self.addr, self.range
        )
    }
}

impl std::error::Error for Blocked {}

/// The allowed special ranges, and the denied ranges.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Arc<Vec<IpNet>>,
    deny: Arc<Vec<IpNet>>,
}

impl Guard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self {
            allow: Arc::new(allow),
            deny: Arc::default(),
        }
    }

    /// This guard, also refusing every address in `deny` (even allowed ones).
    pub fn deny(self, deny: Vec<IpNet>) -> Self {
        Self {
            deny: Arc::new(deny),
            ..self
        }
    }

    /// Whether every address is denied, so that no host name needs to be resolved.
    pub fn denies_everything(&self) -> bool {
        let all = |v4: bool| {
            self.deny
                .iter()
                .any(|net| net.prefix_len() == 0 && matches!(net, IpNet::V4(_)) == v4)
        };
        all(true) && all(false)
    }

    pub fn check(&self, addr: IpAddr) -> Result<(), Blocked> {
        // An IPv4 address written as IPv6 is denied as the IPv4 address too.
        let embedded = match addr {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if self
            .deny
            .iter()
            .any(|net| net.contains(&addr) || embedded.is_some_and(|v4| net.contains(&v4)))
        {
            return Err(Blocked {
                addr,
                range: "denied",
                denied: true,
            });
        }
        if self.allow.iter().any(|net| net.contains(&addr)) {
            return Ok(());
        }
        // An IPv4 address written as IPv6 is judged (and allowed) as the IPv4 address.
        if let IpAddr::V6(v6) = addr {
            if let Some(v4) = embedded_v4(v6) {
                if self.allow.iter().any(|net| net.contains(&IpAddr::V4(v4))) {
                    return Ok(());
                }
            }
        }
        match special_range(addr) {
            Some(range) => Err(Blocked {
                addr,
                range,
                denied: false,
            }),
            None => Ok(()),
        }
    }
}

/// The IPv4 address carried inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    // 64:ff9b::/96 (NAT64) and the deprecated ::a.b.c.d (IPv4-compatible, not :: or ::1).
    if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0])
        || (s[0..6] == [0, 0, 0, 0, 0, 0] && (s[6] != 0 || s[7] > 1))
    {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // 2002::/16 (6to4) carries the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// Names the special-purpose range `addr` falls in, if any.
pub fn special_range(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return special_v4(v4).map(|_| "IPv4-embedding IPv6 form of a special");
            }
            special_v6(v6)
        }
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (\"this network\")",
        (10, _, _) => "private",
        (100, 64..=127, _) => "carrier-grade NAT",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    Some(match s[0] {
        0x0100 if s[1..4] == [0, 0, 0] => "discard",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2001 if s[1] < 0x0200 => "IETF protocol assignment (Teredo, benchmarking, ...)",
        x if x & 0xfe00 == 0xfc00 => "unique local (private)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// A resolver for the HTTP client that vets every address it hands out.
#[derive(Clone)]
pub struct GuardedResolver {
    pub guard: Guard,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str();
            if guard.denies_everything() {
                return Err(
                    format!("{host} is not resolved: --deny-target denies every address").into(),
                );
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            let mut allowed = Vec::new();
            let mut first_block = None;
            for a in addrs {
                match guard.check(a.ip()) {
                    Ok(()) => allowed.push(a),
                    Err(b) => {
                        first_block.get_or_insert(b);
                    }
                }
            }
            if allowed.is_empty() {
                let err: Self::Error = match first_block {
                    Some(b) => Box::new(b),
                    None => format!("{host} resolved to no address").into(),
                };
                return Err(err);
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_blocked_by_default() {
        let g = Guard::default();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.5",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
            "2001:db8::1",
        ] {
            assert!(g.check(ip(a)).is_err(), "{a} should be blocked");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let g = Guard::default();
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(g.check(ip(a)).is_ok(), "{a} should pass");
        }
    }

    #[test]
    fn allow_list_opens_exactly_its_ranges() {
        let g = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(g.check(ip("127.0.0.1")).is_ok());
        assert!(g.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(g.check(ip("10.0.0.1")).is_err());
        assert!(g.check(ip("::1")).is_err());
    }

    #[test]
    fn deny_list_wins_over_the_allow_list_and_public_addresses() {
        let g = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]).deny(vec![
            "127.0.0.2/32".parse().unwrap(),
            "8.8.8.0/24".parse().unwrap(),
        ]);
        assert!(g.check(ip("127.0.0.1")).is_ok());
        for a in [
            "127.0.0.2",
            "::ffff:127.0.0.2",
            "8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let e = g.check(ip(a)).unwrap_err();
            assert!(e.denied, "{a}");
            assert!(e.to_string().contains("--deny-target"), "{e}");
        }
        assert!(g.check(ip("1.1.1.1")).is_ok());
        assert!(!g.denies_everything());
    }

    #[test]
    fn denying_both_whole_families_denies_everything() {
        let all = |nets: &[&str]| {
            Guard::new(vec!["127.0.0.0/8".parse().unwrap()])
                .deny(nets.iter().map(|n| n.parse().unwrap()).collect())
        };
        let g = all(&["0.0.0.0/0", "::/0"]);
        assert!(g.denies_everything());
        for a in ["127.0.0.1", "8.8.8.8", "::1", "2606:4700:4700::1111"] {
            assert!(g.check(ip(a)).is_err(), "{a}");
        }
        assert!(!all(&["0.0.0.0/0"]).denies_everything());
        assert!(!all(&["::/0"]).denies_everything());
    }

    #[tokio::test]
    async fn a_guard_that_denies_everything_resolves_nothing() {
        use tower_service::Service;
        let mut r = GuardedResolver {
            guard: Guard::default()
                .deny(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]),
        };
        let err = r
            .call("localhost".parse().unwrap())
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("not resolved"), "{err}");
    }

    #[test]
    fn blocked_message_says_why() {
        let e = Guard::default().check(ip("127.0.0.1")).unwrap_err();
        assert!(e.to_string().contains("loopback"));
        assert!(e.to_string().contains("--allow-target"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Every IPv4 address is judged the same in each IPv6 form that embeds it
            /// (IPv4-mapped, NAT64, 6to4): none of them is a way around the guard.
            #[test]
            fn embedded_ipv4_is_judged_as_itself(raw in any::<u32>()) {
                let v4 = Ipv4Addr::from(raw);
                let g = Guard::default();
                let blocked = g.check(IpAddr::V4(v4)).is_err();
                let o = v4.octets();
                let forms = [
                    v4.to_ipv6_mapped(),
                    Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0,
                        u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]])),
                    Ipv6Addr::new(0x2002, u16::from_be_bytes([o[0], o[1]]),
                        u16::from_be_bytes([o[2], o[3]]), 0, 0, 0, 0, 1),
                ];
                for v6 in forms {
                    prop_assert_eq!(g.check(IpAddr::V6(v6)).is_err(), blocked, "{} as {}", v4, v6);
                }
            }

            /// Any address gets an answer (no panic), and an allowed network lets each of
            /// its addresses through, special or not.
            #[test]
            fn any_address_is_judged_and_the_allow_list_wins(raw in any::<u128>(), v6 in any::<bool>()) {
                let addr = if v6 {
                    IpAddr::V6(Ipv6Addr::from(raw))
                } else {
                    IpAddr::V4(Ipv4Addr::from(raw as u32))
                };
                let _ = Guard::default().check(addr);
                let net = IpNet::new(addr, if v6 { 128 } else { 32 }).unwrap();
                prop_assert!(Guard::new(vec![net]).check(addr).is_ok());
            }
        }
    }
}
