//! The SSRF guard for outbound webhooks: in production, a webhook may only reach public
//! addresses. Literal IPs are checked before connecting, and host names are resolved by
//! [`PublicOnlyResolver`], which drops loopback, private, link-local and other special
//! ranges, so a name that resolves (or re-resolves) inward is refused at delivery.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Whether an address is on the public internet (not loopback, private, link-local,
/// shared, documentation, benchmarking, multicast, reserved or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 (may reach inward IPv4)
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible, deprecated
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL points at a non-public address")]
    NotPublic,
}

/// Checks what can be checked without DNS: the host is present, is not `localhost`, and,
/// if it is a literal IP, is public.
pub fn check_url(url: &reqwest::Url) -> Result<(), UrlRefused> {
    match url.host() {
        None => Err(UrlRefused::NoHost),
        Some(url::Host::Ipv4(ip)) if !is_public(IpAddr::V4(ip)) => Err(UrlRefused::NotPublic),
        Some(url::Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => Err(UrlRefused::NotPublic),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                Err(UrlRefused::NotPublic)
            } else {
                Ok(())
            }
        }
        Some(_) => Ok(()),
    }
}

/// [`check_url`] for a URL given as text (an unparsable one has no host).
pub fn check_url_text(raw: &str) -> Result<(), UrlRefused> {
    let url = reqwest::Url::parse(raw).map_err(|_| UrlRefused::NoHost)?;
    check_url(&url)
}

/// A resolver that only ever hands out public addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host)
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the host resolves to no public address",
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn inward_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
        ] {
            assert!(!is_public(ip(s)), "{s}");
        }
        for s in [
            "8.8.8.8",
            "203.0.114.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(s)), "{s}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_lookup() {
        let check = |u: &str| check_url(&reqwest::Url::parse(u).unwrap());
        assert_eq!(check("http://127.0.0.1:8080/x"), Err(UrlRefused::NotPublic));
        assert_eq!(check("http://[::1]/x"), Err(UrlRefused::NotPublic));
        assert_eq!(check("https://LOCALHOST./x"), Err(UrlRefused::NotPublic));
        assert_eq!(check("https://api.localhost/x"), Err(UrlRefused::NotPublic));
        assert_eq!(
            check("http://169.254.169.254/latest"),
            Err(UrlRefused::NotPublic)
        );
        assert_eq!(check("https://hooks.example.com/x"), Ok(()));
        assert_eq!(check("https://8.8.8.8/x"), Ok(()));
    }
}
