//! Whether the network is there, and the wait for it to come back.
//!
//! A failure that means "no network here" (no route, the network or host unreachable, no
//! local address, a connect that timed out) is not a server failure: it does not count towards
//! `--max-tries`. The connection waits for the network instead, up to `--network-wait` from the
//! moment it was first missed, and comes back as soon as a route to the server exists again.
//! The probe is a UDP socket's `connect` (a route lookup in the kernel; nothing is sent) and
//! the flags of the interface that route leaves by, so it can run every [`POLL`] for the
//! whole outage.
//!
//! [`Network`] is shared by the connections of one download: the first one to miss the
//! network starts the outage, a successful login ends it ([`Network::reached`]), and the run
//! loop's [`Network::probe`] sees the route go and come back (to wake every waiting
//! connection at once, and to say so).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::ftp::SessionError;

/// How often the route is probed while the network is missing.
pub const POLL: Duration = Duration::from_millis(300);

/// The default `--network-wait`: a train through a long tunnel, a laptop carried to a meeting.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30 * 60);

/// Whether `e` says that this machine has no network to the server (rather than that the
/// server failed): see the module documentation.
pub fn means_no_network(e: &SessionError) -> bool {
    match e {
        SessionError::Connect { source, .. } => {
            io_means_no_network(source) || source.kind() == std::io::ErrorKind::TimedOut
        }
        SessionError::Io { source, .. } => io_means_no_network(source),
        _ => false,
    }
}

/// An I/O error of "no route from here": unreachable network or host, network down, no local
/// address (the interface the socket was bound to went away).
fn io_means_no_network(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{AddrNotAvailable, HostUnreachable, NetworkDown, NetworkUnreachable};
    matches!(
        e.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN | libc::EADDRNOTAVAIL)
    ) || matches!(
        e.kind(),
        NetworkUnreachable | HostUnreachable | NetworkDown | AddrNotAvailable
    )
}

/// Whether a name lookup failed because no resolver answered (rather than "no such host").
pub fn lookup_means_no_network(detail: &str) -> bool {
    // getaddrinfo's EAI_AGAIN, as std words it; std gives no code for it.
    let d = detail.to_ascii_lowercase();
    d.contains("temporary failure in name resolution") || d.contains("try again")
}

/// Whether this machine has a way to any of `addrs` now (see the module documentation): a
/// route, through an interface that is up and running; the error of the first address when
/// none has. (Taking an interface down keeps its local routes, loopback's among them: only its
/// flags say that no packet will pass.)
pub fn route_to(addrs: &[SocketAddr]) -> Result<(), std::io::Error> {
    let mut first = None;
    for addr in addrs {
        match route_one(addr) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_else(|| std::io::Error::other("no address to reach")))
}

fn route_one(addr: &SocketAddr) -> Result<(), std::io::Error> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    let from = socket.local_addr()?.ip();
    match interface_of(from) {
        Some((name, false)) => Err(std::io::Error::new(
            std::io::ErrorKind::NetworkDown,
            format!("the network interface {name} is down"),
        )),
        _ => Ok(()),
    }
}

/// The interface that holds the local address `ip`, and whether it is up and running.
fn interface_of(ip: std::net::IpAddr) -> Option<(String, bool)> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() && found.is_none() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: a non-null ifa_addr points to a sockaddr of the family it names.
        let addr = unsafe { ifa.ifa_addr.as_ref() }.and_then(|sa| unsafe { ip_of(sa) });
        if addr == Some(ip) {
            let flags = ifa.ifa_flags;
            let running = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_uint;
            // SAFETY: ifa_name is a NUL-terminated string of the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            found = Some((
                name.to_string_lossy().into_owned(),
                flags & running == running,
            ));
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// The IP address in `sa`, for IPv4 and IPv6.
///
/// # Safety
/// `sa` must point to a whole `sockaddr_in` or `sockaddr_in6` when its family says so.
unsafe fn ip_of(sa: &libc::sockaddr) -> Option<std::net::IpAddr> {
    match sa.sa_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let v4 = unsafe { &*(sa as *const libc::sockaddr).cast::<libc::sockaddr_in>() };
            Some(std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let v6 = unsafe { &*(sa as *const libc::sockaddr).cast::<libc::sockaddr_in6>() };
            Some(std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr).into())
        }
        _ => None,
    }
}

/// What [`Network::probe`] saw change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The route to the server is gone (`why`: the kernel's answer).
    Lost { why: String },
    /// The route is back after `after` without it.
    Back { after: Duration },
}

/// The network as the connections of one download see it.
#[derive(Debug)]
pub struct Network {
    /// `--network-wait`: how long an outage may last before the download gives up.
    wait: Duration,
    addrs: Mutex<Vec<SocketAddr>>,
    /// Since when no connection has reached the server for want of a network, and why.
    outage: Mutex<Option<(Instant, String)>>,
    /// The route as the last probe saw it: `None` while it is there, else since when not.
    route_gone: Mutex<Option<Instant>>,
    /// Bumped each time the route comes back: waiting connections wake at once.
    back: watch::Sender<u64>,
}

/// The network was missing for longer than `--network-wait`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gone {
    /// How long it was missing.
    pub waited: Duration,
    /// The last failure, as the kernel or the connection said it.
    pub why: String,
}

impl Gone {
    /// The error that ends the download: exit 4, naming the host and the wait.
    pub fn into_error(self, host: &str, limit: Duration) -> crate::error::Error {
        crate::error::Error::NetworkGone {
            host: host.to_owned(),
            waited: crate::ui::human_duration(self.waited),
            limit: crate::ui::human_duration(limit),
            why: if self.why.is_empty() {
                "no route to it".to_owned()
            } else {
                self.why
            },
        }
    }
}

impl Network {
    pub fn new(wait: Duration, addrs: Vec<SocketAddr>) -> Network {
        Network {
            wait,
            addrs: Mutex::new(addrs),
            outage: Mutex::new(None),
            route_gone: Mutex::new(None),
            back: watch::Sender::new(0),
        }
    }

    /// `--network-wait`.
    pub fn wait_limit(&self) -> Duration {
        self.wait
    }

    /// The addresses the route is probed to (after a new name lookup, the new ones).
    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        *lock(&self.addrs) = addrs;
    }

    /// The addresses the sessions connect to.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        lock(&self.addrs).clone()
    }

    /// Whether there is a route to the server now.
    pub fn route(&self) -> Result<(), std::io::Error> {
        route_to(&lock(&self.addrs))
    }

    /// A connection (or the probe) found no network (`why`): the outage starts now unless it
    /// already has; its first reason is the one reported.
    pub fn missed(&self, why: &str) {
        let mut o = lock(&self.outage);
        if o.is_none() {
            crate::trace!("network: missed ({why})");
            *o = Some((Instant::now(), why.to_owned()));
        }
    }

    /// The outage, once it has lasted `--network-wait`.
    pub fn gone(&self) -> Option<Gone> {
        let o = lock(&self.outage);
        let (since, why) = o.as_ref()?;
        (since.elapsed() >= self.wait).then(|| Gone {
            waited: since.elapsed(),
            why: why.clone(),
        })
    }

    /// A connection reached the server: whatever outage there was is over.
    pub fn reached(&self) {
        if lock(&self.outage).take().is_some() {
            crate::trace!("network: reached the server again");
        }
    }

    /// Since when the network has been missing, if it is (for the progress view).
    pub fn missing_since(&self) -> Option<Instant> {
        lock(&self.outage).as_ref().map(|(t, _)| *t)
    }

    /// Probes the route (the run loop does, every [`POLL`] or so) and says what changed.
    pub fn probe(&self) -> Option<Change> {
        let now = self.route();
        let mut gone = lock(&self.route_gone);
        match (now, *gone) {
            (Ok(()), Some(since)) => {
                *gone = None;
                drop(gone);
                self.back.send_modify(|n| *n += 1);
                crate::trace!("network: route back");
                Some(Change::Back {
                    after: since.elapsed(),
                })
            }
            (Err(e), None) => {
                *gone = Some(Instant::now());
                drop(gone);
                let why = e.to_string();
                self.missed(&why);
                crate::trace!("network: route lost ({why})");
                Some(Change::Lost { why })
            }
            _ => None,
        }
    }

    /// Waits until trying again may work: at once when there is a route (the failure was a
    /// timeout, or the route came back), else until it comes back, probing every [`POLL`].
    /// [`Gone`] once the network has been missing for `--network-wait`.
    pub async fn wait_for_return(&self) -> Result<(), Gone> {
        let mut back = self.back.subscribe();
        let mut first = true;
        loop {
            let (since, why) = lock(&self.outage)
                .clone()
                .unwrap_or_else(|| (Instant::now(), String::new()));
            if since.elapsed() >= self.wait {
                return Err(Gone {
                    waited: since.elapsed(),
                    why,
                });
            }
            match self.route() {
                Ok(()) if first => {
                    // A route, yet the attempt found no network (a timeout, or a route that
                    // just came back): pace the next attempt by one poll.
                    tokio::time::sleep(POLL).await;
                    return Ok(());
                }
                Ok(()) => return Ok(()),
                Err(e) => self.missed(&e.to_string()),
            }
            first = false;
            let left = self.wait.saturating_sub(since.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(POLL.min(left)) => {}
                _ = back.changed() => {}
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn connect_error(errno: i32) -> SessionError {
        SessionError::Connect {
            addr: (Ipv4Addr::LOCALHOST, 21).into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn unreachable_and_timed_out_connects_mean_no_network_refused_does_not() {
        assert!(means_no_network(&connect_error(libc::ENETUNREACH)));
        assert!(means_no_network(&connect_error(libc::EHOSTUNREACH)));
        assert!(means_no_network(&connect_error(libc::EADDRNOTAVAIL)));
        assert!(means_no_network(&connect_error(libc::ETIMEDOUT)));
        // Nothing listening: the server is down, not the network.
        assert!(!means_no_network(&connect_error(libc::ECONNREFUSED)));
        assert!(!means_no_network(&SessionError::Timeout("RETR".into())));
    }

    #[test]
    fn a_resolver_that_does_not_answer_means_no_network_an_unknown_name_does_not() {
        assert!(lookup_means_no_network(
            "failed to lookup address information: Temporary failure in name resolution"
        ));
        assert!(!lookup_means_no_network(
            "failed to lookup address information: Name or service not known"
        ));
    }

    #[test]
    fn loopback_has_a_route_through_an_interface_that_is_up() {
        route_to(&[(Ipv4Addr::LOCALHOST, 21).into()]).unwrap();
        let (name, up) = interface_of(Ipv4Addr::LOCALHOST.into()).unwrap();
        assert_eq!(name, "lo");
        assert!(up);
    }

    #[tokio::test]
    async fn an_outage_longer_than_the_wait_is_gone_and_a_login_ends_it() {
        // No route to TEST-NET-1 is not guaranteed, so the outage is declared, and the route
        // probed is a blackhole-free loopback: with a route, waiting returns at once.
        let net = Network::new(
            Duration::from_millis(50),
            vec![(Ipv4Addr::LOCALHOST, 21).into()],
        );
        net.missed("test");
        assert!(net.missing_since().is_some());
        net.wait_for_return().await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let gone = net.wait_for_return().await.unwrap_err();
        assert_eq!(gone.why, "test");
        assert!(gone.waited >= Duration::from_millis(50));
        net.reached();
        assert!(net.missing_since().is_none());
        net.wait_for_return().await.unwrap();
    }
}
