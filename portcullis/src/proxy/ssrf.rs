//! Upstream safety: a provider's `base_url` may not point at link-local or
//! cloud-metadata addresses (where instance credentials live) unless the
//! provider says `allow_link_local: true`. Checked twice: at load for literal
//! addresses and well-known metadata host names, and at every connect by the
//! resolver, so a name that resolves (or re-resolves) to such an address is
//! refused too. Redirects are never followed: the upstream client has no
//! redirect logic, so a 3xx goes back to the client as it is.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower::Service;

/// Host names that are cloud metadata services.
pub const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// True for link-local and cloud-metadata addresses.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local() // 169.254.0.0/16, incl. 169.254.169.254
                || v4 == Ipv4Addr::new(100, 100, 100, 200) // Alibaba Cloud metadata
                || v4 == Ipv4Addr::new(192, 0, 0, 192) // Oracle Cloud metadata
        }
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80 // fe80::/10
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // AWS IMDS over IPv6
                || v6.to_ipv4_mapped().is_some_and(|v4| is_blocked(IpAddr::V4(v4)))
        }
    }
}

/// Checks a base URL's host at load time; `Err` says why.
pub fn check_host(host: &str) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>()
        && is_blocked(ip)
    {
        return Err(format!(
            "`{host}` is a link-local or cloud-metadata address"
        ));
    }
    let lower = bare.trim_end_matches('.').to_ascii_lowercase();
    if METADATA_HOSTS.contains(&lower.as_str()) {
        return Err(format!("`{host}` is a cloud-metadata host"));
    }
    Ok(())
}

/// A DNS resolver that drops blocked addresses from every answer (unless allowed).
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    inner: GaiResolver,
    allow_link_local: bool,
}

impl GuardedResolver {
    /// A resolver; with `allow_link_local` it filters nothing.
    pub fn new(allow_link_local: bool) -> Self {
        GuardedResolver {
            inner: GaiResolver::new(),
            allow_link_local,
        }
    }
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl Service<Name> for GuardedResolver {
    type Response = Addrs;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.allow_link_local;
        let fut = self.inner.call(name);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = fut
                .await?
                .filter(|a| allow || !is_blocked(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the provider's host resolves only to link-local or cloud-metadata addresses",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

/// The same guard for `reqwest` clients (budget alert webhooks).
impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_link_local;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow || !is_blocked(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the host resolves only to link-local or cloud-metadata addresses",
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blocks_metadata_and_link_local() {
        for bad in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "100.100.100.200",
        ] {
            assert!(is_blocked(bad.parse().unwrap()), "{bad}");
        }
        for ok in ["127.0.0.1", "10.0.0.1", "8.8.8.8", "::1", "fd00::1"] {
            assert!(!is_blocked(ok.parse().unwrap()), "{ok}");
        }
        assert!(check_host("[fe80::1]").is_err());
        assert!(check_host("metadata.google.internal").is_err());
        assert!(check_host("api.openai.com").is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_blocked_answers() {
        let mut r = GuardedResolver::new(false);
        let ok: Vec<_> = r
            .call("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!ok.is_empty());
    }
}
