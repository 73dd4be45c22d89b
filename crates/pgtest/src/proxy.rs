//! A fault-injecting TCP proxy: what a flaky network, a load balancer or a failover does to a
//! connection, on demand.
//!
//! It runs on plain threads (no async runtime), so a test can drive it from anywhere: from a
//! tokio task, from a thread that also runs `psql`, or from a fault schedule of its own.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;

/// How much one forwarding thread reads at once.
const CHUNK: usize = 64 * 1024;

/// How often a stalled forwarding thread looks whether the stall is over.
const STALL_POLL: Duration = Duration::from_millis(2);

/// A TCP proxy on 127.0.0.1 that forwards every connection to a target and, when told, cuts
/// all connections, stalls (stops forwarding, holding the bytes, for a while) or delays each
/// chunk. New connections go to the target of the moment, which can change (a failover).
///
/// ```no_run
/// use std::time::Duration;
///
/// let cluster = pgtest::cluster(17);
/// let target = format!("{}:{}", cluster.host(), cluster.port()).parse().unwrap();
/// let proxy = pgtest::Proxy::start(target)?;
/// let conninfo = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", proxy.port());
/// // ... connect through `conninfo` ...
/// proxy.stall(Duration::from_millis(500)); // nothing moves for half a second
/// proxy.cut(); // every open connection is closed on both sides
/// # Ok::<(), pgtest::Error>(())
/// ```
///
/// Dropping the proxy cuts its connections and stops listening.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    target: Mutex<SocketAddr>,
    /// Both sockets of every open connection, by connection number.
    conns: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    /// Forwarding waits until this moment (a stall).
    stalled_until: Mutex<Option<Instant>>,
    /// Forwarding waits while this is set (a stall without an end).
    paused: AtomicBool,
    /// Each chunk waits this long before it is forwarded.
    delay: Mutex<Duration>,
    accepted: AtomicU64,
    cuts: AtomicU64,
    to_client: AtomicU64,
    to_server: AtomicU64,
    closing: AtomicBool,
}

/// Locks `m`, also after a panic elsewhere (the data is plain settings and sockets).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to `target`.
    pub fn start(target: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::new(format!("proxy: binding 127.0.0.1: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::new(format!("proxy: local address: {e}")))?;
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            conns: Mutex::new(Vec::new()),
            stalled_until: Mutex::new(None),
            paused: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            to_server: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::Builder::new()
            .name("pgtest-proxy".into())
            .spawn(move || accept_loop(&listener, &s))
            .map_err(|e| Error::new(format!("proxy: starting a thread: {e}")))?;
        Ok(Self { addr, shared })
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends new connections to `to` (open ones stay where they are; [`cut`](Self::cut) them).
    pub fn retarget(&self, to: SocketAddr) {
        *lock(&self.shared.target) = to;
    }

    /// Cuts every open connection: both sockets are shut down, so the client and the server
    /// each see the connection end (bytes not yet forwarded are lost, as on a real network).
    /// Returns how many connections were cut.
    pub fn cut(&self) -> usize {
        let conns: Vec<_> = lock(&self.shared.conns).drain(..).collect();
        for (_, client, server) in &conns {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        self.shared.cuts.fetch_add(1, Ordering::Relaxed);
        conns.len()
    }

    /// Stops forwarding in both directions for `duration` (from now; a longer stall already
    /// running is kept). The bytes wait in the proxy and the socket buffers and are forwarded
    /// afterwards, in order: a network that hangs, then recovers.
    pub fn stall(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut s = lock(&self.shared.stalled_until);
        *s = Some(s.map_or(until, |u| u.max(until)));
    }

    /// Stops (`true`) or resumes (`false`) forwarding until told otherwise.
    pub fn pause(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Release);
    }

    /// Delays every chunk forwarded from now on by `delay` (zero: none), in both directions.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// How many times [`cut`](Self::cut) was called.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::Relaxed)
    }

    /// Bytes forwarded from the servers to the clients, and from the clients to the servers.
    pub fn bytes_forwarded(&self) -> (u64, u64) {
        (
            self.shared.to_client.load(Ordering::Relaxed),
            self.shared.to_server.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.pause(false);
        self.cut();
        // Wake the accepting thread so that it sees `closing`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut next_id = 0u64;
    for client in listener.incoming() {
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let target = *lock(&shared.target);
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(10)) else {
            // Nothing listens there (a server restarting): the client sees its connection
            // closed, as it would see a refusal.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let clones = (client.try_clone(), server.try_clone());
        let (Ok(client2), Ok(server2)) = clones else {
            continue;
        };
        let (Ok(client3), Ok(server3)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        lock(&shared.conns).push((id, client3, server3));
        for (from, to, up) in [(client, server2, true), (server, client2, false)] {
            let s = shared.clone();
            let spawned = thread::Builder::new()
                .name("pgtest-proxy-fwd".into())
                .spawn(move || forward(from, to, up, id, &s));
            if spawned.is_err() {
                break;
            }
        }
    }
}

/// Copies `from` to `to` until either side ends, obeying stalls and delays; then closes both
/// sockets of the connection.
fn forward(mut from: TcpStream, mut to: TcpStream, up: bool, id: u64, shared: &Shared) {
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        wait_while_stalled(shared);
        let delay = *lock(&shared.delay);
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        let Some(chunk) = buf.get(..n) else { break };
        // Counted before the write, so that a peer that has received the bytes (an echo's
        // reply, say) always sees them counted.
        let counter = if up {
            &shared.to_server
        } else {
            &shared.to_client
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    lock(&shared.conns).retain(|(i, _, _)| *i != id);
}

fn wait_while_stalled(shared: &Shared) {
    loop {
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        let stalled = shared.paused.load(Ordering::Acquire)
            || lock(&shared.stalled_until).is_some_and(|u| Instant::now() < u);
        if !stalled {
            return;
        }
        thread::sleep(STALL_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on 127.0.0.1.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    fn roundtrip(c: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        c.write_all(msg).unwrap();
        let mut got = vec![0; msg.len()];
        c.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn forwards_stalls_and_cuts() {
        let proxy = Proxy::start(echo()).unwrap();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(roundtrip(&mut c, b"hello"), b"hello");

        proxy.stall(Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(roundtrip(&mut c, b"later"), b"later");
        assert!(started.elapsed() >= Duration::from_millis(250));

        proxy.set_delay(Duration::from_millis(50));
        let started = Instant::now();
        assert_eq!(roundtrip(&mut c, b"slow"), b"slow");
        assert!(started.elapsed() >= Duration::from_millis(100));
        proxy.set_delay(Duration::ZERO);

        assert_eq!(proxy.cut(), 1);
        let mut b = [0; 1];
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
        assert_eq!(proxy.cuts(), 1);
        assert_eq!(proxy.bytes_forwarded(), (14, 14));

        // New connections still work after a cut.
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(roundtrip(&mut c, b"again"), b"again");
        assert_eq!(proxy.accepted(), 2);
    }
}
