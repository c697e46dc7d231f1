//! The client's address: the socket peer, unless the peer is a trusted proxy, in which case
//! the right-most untrusted address of `X-Forwarded-For` (or `X-Real-IP`). A client can put
//! anything in those headers, so they count only when a proxy we trust wrote them.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use ipnet::IpNet;

pub fn resolve<B>(req: &Request<B>, trusted: &[IpNet]) -> IpAddr {
    let peer =
        req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
    from_headers(peer, req.headers(), trusted)
}

pub fn from_headers(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // Walk from the nearest hop outwards; the first address not ours is the client.
    if let Some(ip) = forwarded.iter().rev().find(|ip| !is_trusted(ip)) {
        return *ip;
    }
    if let Some(ip) = forwarded.first() {
        return *ip;
    }
    headers.get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().expect("header"));
        h
    }

    #[test]
    fn spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
        let trusted = vec!["10.0.0.0/8".parse().expect("cidr")];
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(from_headers(peer, &headers("6.6.6.6"), &trusted), peer);
    }

    #[test]
    fn a_trusted_proxy_reveals_the_client_and_prepended_lies_are_skipped() {
        let trusted = vec!["10.0.0.0/8".parse().expect("cidr")];
        let peer: IpAddr = "10.0.0.2".parse().expect("ip");
        let client: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(from_headers(peer, &headers("6.6.6.6, 198.51.100.7"), &trusted), client);
        assert_eq!(from_headers(peer, &headers("198.51.100.7, 10.0.0.5"), &trusted), client);
    }
}
