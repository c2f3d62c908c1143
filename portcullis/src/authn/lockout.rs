//! Per-address lockout against credential guessing, and the client address
//! itself (the socket peer, or `X-Forwarded-For` read right to left when the
//! peer is a trusted proxy).
//!
//! State is bounded: at most [`MAX_TRACKED`] addresses (IPv6 counted per /64,
//! so one host cannot rotate through its own prefix), each forgotten once its
//! window and block have passed.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;
use moka::sync::Cache;

use crate::clock::SharedClock;
use crate::config::LockoutConfig;

/// Addresses tracked at once.
pub const MAX_TRACKED: u64 = 100_000;

#[derive(Debug, Default)]
struct Entry {
    window_start_ms: i64,
    failures: u32,
    blocked_until_ms: i64,
    blocks: u32,
}

/// Failed-authentication counters per client address.
pub struct Lockout {
    cfg: LockoutConfig,
    clock: SharedClock,
    entries: Cache<IpAddr, Arc<Mutex<Entry>>>,
}

impl std::fmt::Debug for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockout")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The address a lockout counts: IPv4 as is, IPv6 by its /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Lockout {
    /// A lockout with these settings.
    pub fn new(cfg: LockoutConfig, clock: SharedClock) -> Self {
        Lockout {
            cfg,
            clock,
            entries: Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_idle(cfg.window.max(cfg.max_block) + Duration::from_secs(60))
                .build(),
        }
    }

    /// How long `ip` stays blocked, if it is.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let entry = self.entries.get(&bucket(ip))?;
        let now = self.clock.now_ms();
        let e = entry.lock().ok()?;
        (e.blocked_until_ms > now)
            .then(|| Duration::from_millis(u64::try_from(e.blocked_until_ms - now).unwrap_or(0)))
    }

    /// Counts a failure; returns the block it started, if it started one.
    pub fn failure(&self, ip: IpAddr) -> Option<Duration> {
        let entry = self
            .entries
            .get_with(bucket(ip), || Arc::new(Mutex::new(Entry::default())));
        let now = self.clock.now_ms();
        let mut e = entry.lock().ok()?;
        if now.saturating_sub(e.window_start_ms) >= ms(self.cfg.window) {
            // A quiet window forgives: counting and escalation start over.
            if e.blocked_until_ms <= now && e.failures == 0 {
                e.blocks = 0;
            }
            e.window_start_ms = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures < self.cfg.max_failed_attempts {
            return None;
        }
        let factor = u64::from(self.cfg.block_multiplier).saturating_pow(e.blocks);
        let block = self
            .cfg
            .block
            .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
            .unwrap_or(self.cfg.max_block)
            .min(self.cfg.max_block);
        e.blocks = e.blocks.saturating_add(1);
        e.failures = 0;
        e.window_start_ms = now;
        e.blocked_until_ms = now.saturating_add(ms(block));
        Some(block)
    }

    /// Addresses currently tracked (for tests and metrics).
    pub fn tracked(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

/// The client's address: the socket peer, unless the peer is a trusted proxy,
/// in which case `X-Forwarded-For` is read right to left and the first
/// address that is not a trusted proxy is the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let values: Vec<&str> = headers
        .get_all(http::HeaderName::from_static("x-forwarded-for"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for hop in values.iter().rev().flat_map(|v| v.split(',').rev()) {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clock::ManualClock;
    use http::HeaderValue;

    #[test]
    fn blocks_grow_and_cap() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cfg = LockoutConfig {
            max_failed_attempts: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(10),
            block_multiplier: 2,
            max_block: Duration::from_secs(25),
        };
        let l = Lockout::new(cfg, clock.clone());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(l.failure(ip), None);
        assert_eq!(l.failure(ip), None);
        assert_eq!(l.failure(ip), Some(Duration::from_secs(10)));
        assert_eq!(l.blocked(ip), Some(Duration::from_secs(10)));
        assert!(l.blocked("10.0.0.2".parse().unwrap()).is_none());
        clock.advance_ms(10_000);
        assert!(l.blocked(ip).is_none());
        for _ in 0..2 {
            assert_eq!(l.failure(ip), None);
        }
        assert_eq!(l.failure(ip), Some(Duration::from_secs(20)));
        clock.advance_ms(20_000);
        for _ in 0..2 {
            l.failure(ip);
        }
        assert_eq!(l.failure(ip), Some(Duration::from_secs(25)), "capped");
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8, 10.1.1.1"),
        );
        let untrusted: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(client_ip(untrusted, &h, &trusted), untrusted);
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(proxy, &h, &trusted), proxy);
    }
}
