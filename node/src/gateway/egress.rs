//! Where a paying client may go through the gateway: the `upstreams` rules.
//!
//! A rule is `HOST:PORT` with `*` for any port, where HOST is
//! - `public`: any public address (the default rule, `public:*`);
//! - an address or a CIDR range (`127.0.0.1`, `10.1.0.0/16`, `[::1]`, `[fd00::/8]`): matched on
//!   the address the gateway connects to; the only way to open loopback, private, link-local or
//!   the gateway's own addresses;
//! - a name or a wildcard (`api.example.com`, `*.example.com`: subdomains, not the apex):
//!   matched on the name the client asked for, and only while it resolves to public addresses.
//!
//! The target is resolved once, each address is checked, and the gateway connects to the
//! address it checked: a name that resolves to a private address (DNS rebinding) reaches only
//! what an address rule opens.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;

/// A rule's host part.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Public,
    Net(IpNet),
    Name(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    host: Host,
    /// `None`: any port.
    port: Option<u16>,
}

/// The parsed `upstreams` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    rules: Vec<Rule>,
}

impl Default for Egress {
    /// `["public:*"]`: the internet at large, nothing behind the gateway.
    fn default() -> Self {
        Self {
            rules: vec![Rule {
                host: Host::Public,
                port: None,
            }],
        }
    }
}

/// A rule that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("upstream rule {rule:?}: {reason}")]
pub struct BadRule {
    rule: String,
    reason: &'static str,
}

/// Why a CONNECT target is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not `host:port`.
    #[error("the target must be host:port")]
    BadTarget,
    /// The name does not resolve.
    #[error("cannot resolve {target}")]
    Unresolvable {
        /// The target.
        target: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No rule allows any of its addresses.
    #[error("{target} is not an allowed upstream")]
    NotAllowed {
        /// The target.
        target: String,
    },
}

impl std::str::FromStr for Egress {
    type Err = BadRule;
    /// Rules separated by commas (the command-line form).
    fn from_str(text: &str) -> Result<Self, BadRule> {
        let rules = text.split(',').map(str::trim).filter(|r| !r.is_empty());
        Ok(Self {
            rules: rules.map(parse_rule).collect::<Result<_, _>>()?,
        })
    }
}

impl<'de> Deserialize<'de> for Egress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        let rules = texts.iter().map(|text| parse_rule(text));
        Ok(Self {
            rules: rules
                .collect::<Result<_, _>>()
                .map_err(serde::de::Error::custom)?,
        })
    }
}

fn parse_rule(text: &str) -> Result<Rule, BadRule> {
    let bad = |reason| BadRule {
        rule: text.to_owned(),
        reason,
    };
    let (host, port) = text
        .rsplit_once(':')
        .ok_or(bad("write HOST:PORT or HOST:*"))?;
    let port = match port {
        "*" => None,
        digits => Some(
            digits
                .parse::<u16>()
                .map_err(|_| bad("the port is 1-65535 or *"))?,
        ),
    };
    if port == Some(0) {
        return Err(bad("the port is 1-65535 or *"));
    }
    let host = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(bad("an unclosed ["))?;
        Host::Net(parse_net(inner).ok_or(bad("not an IPv6 address or range"))?)
    } else if host.eq_ignore_ascii_case("public") {
        Host::Public
    } else if let Some(net) = parse_net(host) {
        Host::Net(net)
    } else if let Some(domain) = host.strip_prefix("*.") {
        Host::Subdomains(format!(".{}", name_of(domain).ok_or(bad("not a domain"))?))
    } else {
        Host::Name(name_of(host).ok_or(bad("not a host name, address or range"))?)
    };
    Ok(Rule { host, port })
}

/// An address (as a one-address range) or a CIDR range.
fn parse_net(text: &str) -> Option<IpNet> {
    match text.parse::<IpAddr>() {
        Ok(ip) => Some(IpNet::from(ip)),
        Err(_) => text.parse::<IpNet>().ok().map(|net| net.trunc()),
    }
}

/// A DNS name, lower-cased, without a trailing dot; `None` if it cannot be one.
fn name_of(text: &str) -> Option<String> {
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (!name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)).then_some(name)
}

impl Egress {
    /// Resolves `authority` (`host:port`) and returns the first address a rule allows: the one
    /// address the gateway may connect to.
    pub async fn resolve(&self, authority: &str) -> Result<SocketAddr, Refusal> {
        let (host, port) = authority.rsplit_once(':').ok_or(Refusal::BadTarget)?;
        let port: u16 = port.parse().map_err(|_| Refusal::BadTarget)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = match host.parse::<IpAddr>() {
            Ok(_) => None,
            Err(_) => Some(name_of(host).ok_or(Refusal::BadTarget)?),
        };
        let addresses = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| Refusal::Unresolvable {
                target: authority.to_owned(),
                source,
            })?;
        let mut checked = Vec::new();
        for address in addresses {
            if !checked.contains(&address.ip()) {
                if self.allows(name.as_deref(), address) {
                    return Ok(address);
                }
                checked.push(address.ip());
            }
        }
        Err(Refusal::NotAllowed {
            target: authority.to_owned(),
        })
    }

    /// Whether some rule lets a client asking for `name` (`None`: an address literal) reach
    /// `address`.
    fn allows(&self, name: Option<&str>, address: SocketAddr) -> bool {
        let ip = canonical(address.ip());
        let public = is_public(ip) && !is_own(ip);
        self.rules.iter().any(|rule| {
            rule.port.is_none_or(|port| port == address.port())
                && match &rule.host {
                    Host::Public => public,
                    Host::Net(net) => net.contains(&ip),
                    Host::Name(wanted) => public && name == Some(wanted.as_str()),
                    Host::Subdomains(suffix) => {
                        public && name.is_some_and(|name| name.ends_with(suffix.as_str()))
                    }
                }
        })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Reachable on the internet: not loopback, private, link-local, shared (CGNAT), reserved,
/// documentation, benchmarking, multicast or unspecified. (`IpAddr::is_global` is unstable.)
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b))) // benchmarking
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address inside it.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., high, low] = segments;
        return is_public_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || segments[..2] == [0x2001, 0xdb8] // documentation
        || segments[..6] == [0; 6]) // IPv4-compatible and other ::/96 forms
}

/// One of this host's own addresses: binding to it works only if some interface holds it.
/// (Fails closed: a host that lets anything be bound treats every address as its own.)
fn is_own(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(rules: &[&str]) -> Egress {
        let rules = rules.iter().map(|r| parse_rule(r).unwrap()).collect();
        Egress { rules }
    }

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_default_reaches_the_internet_and_nothing_behind_the_gateway() {
        let default = Egress::default();
        assert!(default.allows(None, at("93.184.216.34:443")));
        assert!(default.allows(Some("example.com"), at("[2606:2800:220:1::1]:80")));
        for inside in [
            "127.0.0.1:8545",
            "10.0.0.1:80",
            "172.16.5.4:80",
            "192.168.1.1:80",
            "169.254.169.254:80", // cloud metadata
            "100.64.0.1:80",
            "0.0.0.0:80",
            "[::1]:80",
            "[fd00::1]:80",
            "[fe80::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[64:ff9b::a00:1]:80", // NAT64 of 10.0.0.1
        ] {
            assert!(!default.allows(None, at(inside)), "{inside}");
            assert!(
                !default.allows(Some("rebound.example"), at(inside)),
                "{inside}"
            );
        }
    }

    #[test]
    fn address_rules_open_exactly_what_they_name() {
        let rules = egress(&["127.0.0.1:8080", "[fd00::/8]:*", "10.1.0.0/16:22"]);
        assert!(rules.allows(None, at("127.0.0.1:8080")));
        assert!(!rules.allows(None, at("127.0.0.1:8081")));
        assert!(!rules.allows(None, at("127.0.0.2:8080")));
        assert!(rules.allows(Some("anything"), at("[fd12::3]:9")));
        assert!(rules.allows(None, at("10.1.200.3:22")));
        assert!(!rules.allows(None, at("10.2.0.1:22")));
        assert!(
            !rules.allows(None, at("93.184.216.34:443")),
            "no public rule"
        );
    }

    #[test]
    fn name_rules_match_names_and_never_open_private_space() {
        let rules = egress(&["api.example.com:443", "*.example.org:*"]);
        let public = at("93.184.216.34:443");
        assert!(rules.allows(Some("api.example.com"), public));
        assert!(!rules.allows(Some("api.example.com"), at("93.184.216.34:80")));
        assert!(!rules.allows(Some("www.example.com"), public));
        assert!(rules.allows(Some("a.b.example.org"), public));
        assert!(
            !rules.allows(Some("example.org"), public),
            "the apex is not a subdomain"
        );
        assert!(!rules.allows(Some("badexample.org"), public));
        assert!(
            !rules.allows(None, public),
            "a name rule does not match an address literal"
        );
        assert!(
            !rules.allows(Some("api.example.com"), at("127.0.0.1:443")),
            "rebinding"
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule() {
        for bad in [
            "example.com",
            "example.com:http",
            "example.com:0",
            "[::1:80",
            "[nope]:80",
            "exa mple.com:80",
            "*.:80",
        ] {
            let error = parse_rule(bad).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
        let many: Egress = "public:443, 127.0.0.1:8080".parse().unwrap();
        assert_eq!(many.rules.len(), 2);
    }

    #[tokio::test]
    async fn a_target_is_resolved_once_and_the_checked_address_is_returned() {
        let loopback = egress(&["127.0.0.1:*"]);
        assert_eq!(
            loopback.resolve("127.0.0.1:9").await.unwrap(),
            at("127.0.0.1:9")
        );
        assert_eq!(
            loopback.resolve("localhost:9").await.unwrap().ip(),
            at("127.0.0.1:9").ip()
        );
        assert!(matches!(
            Egress::default().resolve("localhost:9").await,
            Err(Refusal::NotAllowed { .. })
        ));
        assert!(matches!(
            loopback.resolve("no-port").await,
            Err(Refusal::BadTarget)
        ));
    }
}
