//! The kernel's TCP connections to the VIPs, read from `/proc/net/tcp` and
//! `/proc/net/tcp6` of the node's network namespace.
//!
//! The kernel knows exactly which connections this node serves: when a
//! bucket moves out, they are its flows (the fastpath's seed), and the move
//! ends when none is left in the bucket. `/proc` is read rather than
//! `sock_diag` netlink because it needs no extra dependency and a census
//! runs a few times a second only while buckets move; at ~100k
//! connections a read takes tens of milliseconds (netlink would be the
//! next step).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A connection between a client and a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub vip: IpAddr,
    pub vip_port: u16,
    pub client: IpAddr,
    pub client_port: u16,
}

// `st` values of include/net/tcp_states.h that hold no connection.
const TIME_WAIT: u8 = 0x06;
const CLOSE: u8 = 0x07;
const LISTEN: u8 = 0x0A;

/// The connections of one `/proc/net/tcp{,6}` text whose local address is
/// one of `vips` (lines that do not parse are skipped).
pub fn parse(text: &str, vips: &[IpAddr]) -> Vec<Connection> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?;
            let (local, local_port) = endpoint(fields.next()?)?;
            let (remote, remote_port) = endpoint(fields.next()?)?;
            let state = u8::from_str_radix(fields.next()?, 16).ok()?;
            if matches!(state, TIME_WAIT | CLOSE | LISTEN) || !vips.contains(&local) {
                return None;
            }
            Some(Connection {
                vip: local,
                vip_port: local_port,
                client: remote,
                client_port: remote_port,
            })
        })
        .collect()
}

/// "0100007F:0050": the address as the kernel's native-endian 32-bit
/// words in hex, the port in hex.
fn endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(8 * i..8 * i + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[4 * i..4 * i + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            // A v4 client of a dual-stack socket.
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Every connection to `vips` in this network namespace.
pub fn read(vips: &[IpAddr]) -> std::io::Result<Vec<Connection>> {
    let mut all = parse(&std::fs::read_to_string("/proc/net/tcp")?, vips);
    // No IPv6 in the kernel: no IPv6 connection.
    if let Ok(text) = std::fs::read_to_string("/proc/net/tcp6") {
        all.extend(parse(&text, vips));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 6400#C6:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 6400#C6:1B58 0700#3C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 6400#C6:1B58 0800#3C6:9C41 06 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0B00#C6:1B58 0900#3C6:9C42 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
   4: 6400#C6:1B58 0A00#3C6:9C43 08 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 20 4 30 10 -1
   5: garbage line
";

    /// The sample with addresses written as the kernel prints them on this
    /// machine (native-endian words).
    fn sample() -> String {
        let word = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        TCP.replace("6400#C6", &word([198, 18, 0, 100]))
            .replace("0B00#C6", &word([198, 18, 0, 11]))
            .replace("0700#3C6", &word([198, 19, 0, 7]))
            .replace("0800#3C6", &word([198, 19, 0, 8]))
            .replace("0900#3C6", &word([198, 19, 0, 9]))
            .replace("0A00#3C6", &word([198, 19, 0, 10]))
    }

    #[test]
    fn live_connections_to_a_vip_are_counted_and_the_rest_skipped() {
        let vip: IpAddr = "198.18.0.100".parse().unwrap();
        let got = parse(&sample(), &[vip]);
        assert_eq!(
            got,
            vec![
                Connection {
                    vip,
                    vip_port: 7000,
                    client: "198.19.0.7".parse().unwrap(),
                    client_port: 40000,
                },
                // CLOSE_WAIT still holds a connection.
                Connection {
                    vip,
                    vip_port: 7000,
                    client: "198.19.0.10".parse().unwrap(),
                    client_port: 40003,
                },
            ]
        );
    }

    #[test]
    fn ipv6_and_mapped_addresses_parse() {
        let vip: IpAddr = "2001:2::100".parse().unwrap();
        let client: IpAddr = "2001:2:1::7".parse().unwrap();
        let hex = |a: IpAddr| match a {
            IpAddr::V6(v6) => v6
                .octets()
                .chunks(4)
                .map(|c| format!("{:08X}", u32::from_ne_bytes(c.try_into().unwrap())))
                .collect::<String>(),
            IpAddr::V4(_) => unreachable!(),
        };
        let text = format!(
            "header\n   0: {}:1B58 {}:9C40 01 0 0 0\n",
            hex(vip),
            hex(client)
        );
        let got = parse(&text, &[vip]);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].client, got[0].client_port), (client, 40000));
        let mapped: IpAddr = "::ffff:198.19.0.7".parse().unwrap();
        let (ip, _) = endpoint(&format!("{}:0050", hex(mapped))).unwrap();
        assert_eq!(ip, "198.19.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn this_namespace_can_be_read() {
        // Whatever it holds, reading it works (the node relies on it).
        assert!(read(&["198.18.0.100".parse().unwrap()]).is_ok());
    }
}
