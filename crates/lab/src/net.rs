//! A side on a host of its own: its PostgreSQL and server in a network
//! namespace with an address of its own, linked to this machine by a veth
//! pair, so that tests can cut the link (and slow it down) as a real
//! network fails: a cut drops every packet without a word, as a pulled
//! cable or a dead switch does, and connections find out only by their
//! own timeouts.
//!
//! Inside the namespace the side keeps `127.0.0.1` for itself (server to
//! PostgreSQL, agents to server); this machine reaches it at [`Net::address`]
//! only. Unix sockets (the lab's `psql` and `pg_ctl`) cross namespaces, so
//! the lab can still look at a side whose link is cut.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::util::shell;

/// `10.213.0.0/16`, cut into /30 links: one address here, one there.
const PREFIX: [u8; 2] = [10, 213];
const LINKS: u16 = 1 << 14;

/// One side's namespace and link, recorded in `lab.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    /// The namespace's name (`ip netns`).
    pub ns: String,
    /// Which /30 of 10.213.0.0/16 the link uses.
    pub link: u16,
}

impl Net {
    /// The first free link for `ns` (free: no address of it is on this
    /// machine, which is where every lab link has its near end).
    /// A free link for namespace `ns`, made at once (two instances coming
    /// up together must not pick the same one).
    pub fn pick_and_create(ns: &str) -> Result<Net> {
        static PICKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = PICKING.lock().unwrap_or_else(|e| e.into_inner());
        let used = used_links()?;
        let link = (0..LINKS).find(|l| !used.contains(l)).context("every lab link of 10.213.0.0/16 is taken")?;
        let net = Net { ns: ns.to_owned(), link };
        net.create()?;
        Ok(net)
    }

    fn octets(&self, host: u8) -> String {
        let [a, b] = PREFIX;
        format!("{a}.{b}.{}.{}", self.link >> 6, ((self.link & 63) << 2) as u8 + host)
    }
    /// The side's address, as the tool and the lab reach it.
    pub fn address(&self) -> String {
        self.octets(2)
    }
    /// This machine's end of the link.
    pub fn near_address(&self) -> String {
        self.octets(1)
    }
    fn near_if(&self) -> String {
        format!("imv{}h", self.link)
    }
    fn far_if(&self) -> String {
        format!("imv{}n", self.link)
    }

    /// The argv prefix that runs a program in the namespace (its network
    /// only: files, pids and mounts stay this machine's).
    pub fn enter(&self) -> Vec<String> {
        vec!["nsenter".into(), format!("--net=/run/netns/{}", self.ns)]
    }

    /// Makes the namespace and its link (replacing a leftover of the same
    /// name), with loopback up.
    pub fn create(&self) -> Result<()> {
        self.delete()?;
        let (ns, near, far) = (&self.ns, self.near_if(), self.far_if());
        let (here, there) = (format!("{}/30", self.near_address()), format!("{}/30", self.address()));
        run(&[
            vec!["ip", "netns", "add", ns],
            vec!["ip", "link", "add", &near, "type", "veth", "peer", "name", &far],
            vec!["ip", "link", "set", &far, "netns", ns],
            vec!["ip", "addr", "add", &here, "dev", &near],
            vec!["ip", "link", "set", &near, "up"],
            vec!["ip", "-n", ns, "addr", "add", &there, "dev", &far],
            vec!["ip", "-n", ns, "link", "set", &far, "up"],
            vec!["ip", "-n", ns, "link", "set", "lo", "up"],
        ])
        .with_context(|| format!("making the network namespace {ns} (needs root and iproute2)"))
    }

    /// Removes the namespace and its link.
    pub fn delete(&self) -> Result<()> {
        delete_namespace(&self.ns)
    }

    /// Cuts the link: every packet either way is dropped from now on.
    pub fn cut(&self) -> Result<()> {
        run(&[vec!["ip", "-n", &self.ns, "link", "set", &self.far_if(), "down"]])
    }

    /// Restores a cut link, and returns once packets cross it again (the
    /// cut left failed neighbour entries that would refuse connections
    /// with "No route to host" for a while).
    pub fn mend(&self) -> Result<()> {
        let (ns, near, far) = (&self.ns, self.near_if(), self.far_if());
        run(&[
            vec!["ip", "-n", ns, "link", "set", &far, "up"],
            vec!["ip", "neigh", "flush", "dev", &near],
            vec!["ip", "-n", ns, "neigh", "flush", "dev", &far],
        ])?;
        // A refused connection is an answer: the far end is reachable.
        let probe: SocketAddr = format!("{}:9", self.address()).parse()?;
        let start = Instant::now();
        loop {
            match TcpStream::connect_timeout(&probe, Duration::from_secs(1)) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
                Err(e) if start.elapsed() > Duration::from_secs(15) => {
                    bail!("the link to {} carries nothing 15 s after it was mended: {e}", self.address())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Limits what the side sends to `kbit` kbit/s (`None`: no limit), so
    /// that a transfer lasts long enough to be cut in its middle.
    pub fn throttle(&self, kbit: Option<u32>) -> Result<()> {
        let far = self.far_if();
        let _ = run(&[vec!["tc", "-n", &self.ns, "qdisc", "del", "dev", &far, "root"]]);
        if let Some(kbit) = kbit {
            let rate = format!("{kbit}kbit");
            run(&[vec![
                "tc", "-n", &self.ns, "qdisc", "add", "dev", &far, "root", "tbf", "rate", &rate, "burst", "32kbit",
                "latency", "1s",
            ]])?;
        }
        Ok(())
    }
}

/// Where a side on `net` (`None`: on this machine's loopback) is reached.
pub fn reach(net: Option<&Net>) -> String {
    net.map_or_else(|| "127.0.0.1".to_owned(), Net::address)
}

/// What a side's services listen on: loopback, and its own address if any.
pub fn listen(net: Option<&Net>) -> String {
    match net {
        Some(net) => format!("127.0.0.1,{}", net.address()),
        None => "127.0.0.1".to_owned(),
    }
}

/// Removes a namespace if it is there (its end of the link goes with it,
/// and the pair with that end).
pub fn delete_namespace(ns: &str) -> Result<()> {
    if camino::Utf8Path::new("/run/netns").join(ns).exists() {
        run(&[vec!["ip", "netns", "delete", ns]])?;
    }
    Ok(())
}

/// The links whose near end has an address on this machine.
fn used_links() -> Result<BTreeSet<u16>> {
    let sh = shell()?;
    let out = xshell::cmd!(sh, "ip -o -4 addr show").quiet().read()?;
    Ok(out
        .split_whitespace()
        .filter_map(|word| {
            let ip = word.split('/').next()?;
            let o: Vec<u16> = ip.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
            (o.len() == 4 && o[0] == PREFIX[0] as u16 && o[1] == PREFIX[1] as u16).then(|| (o[2] << 6) | (o[3] >> 2))
        })
        .collect())
}

fn run(commands: &[Vec<&str>]) -> Result<()> {
    let sh = shell()?;
    for argv in commands {
        let out = sh.cmd(argv[0]).args(&argv[1..]).quiet().ignore_status().output()?;
        if !out.status.success() {
            bail!("`{}` failed: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_disjoint_thirty_twos() {
        let a = Net { ns: "a".into(), link: 0 };
        assert_eq!((a.near_address().as_str(), a.address().as_str()), ("10.213.0.1", "10.213.0.2"));
        let b = Net { ns: "b".into(), link: 65 };
        assert_eq!((b.near_address().as_str(), b.address().as_str()), ("10.213.1.5", "10.213.1.6"));
        let last = Net { ns: "c".into(), link: LINKS - 1 };
        assert_eq!(last.address(), "10.213.255.254");
        // Interface names fit IFNAMSIZ (15 bytes).
        assert!(last.near_if().len() <= 15 && last.far_if().len() <= 15);
        assert_eq!((reach(None), listen(None)), ("127.0.0.1".into(), "127.0.0.1".into()));
        assert_eq!((reach(Some(&b)), listen(Some(&b))), ("10.213.1.6".into(), "127.0.0.1,10.213.1.6".into()));
    }
}
