//! Fault-injecting TCP proxies for the tests: one in front of Postgres that understands just
//! enough of the wire protocol to cut a connection right around a COMMIT (or an autocommit
//! statement), and one in front of the S3 server that resets a share of its connections.
//!
//! Postgres framing: after the untyped startup messages (SSLRequest, StartupMessage), every
//! client message is a type byte and a length. Queries come as `Q` (simple protocol, how sqlx
//! sends BEGIN and COMMIT) or as Parse/Bind/Execute/Sync; a prepared statement's text is in its
//! Parse only, so the proxy remembers statement names to know what a Bind runs.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One planned cut of a Postgres connection.
#[derive(Debug, Clone)]
pub struct Cut {
    /// A statement containing this text must have run in the transaction (or, for an
    /// autocommit cut, be the statement).
    pub marker: &'static str,
    /// Cut at the COMMIT of the transaction that ran the marker (else: right after the marker
    /// statement itself, for autocommit statements).
    pub at_commit: bool,
    /// Forward the COMMIT (or statement) before cutting: the server decides, the client never
    /// hears. Else the COMMIT is dropped and the server never sees it.
    pub deliver: bool,
    /// After the cut, refuse every new connection this long (the catalog "stays away").
    pub refuse_for: Duration,
}

impl Cut {
    /// Deliver the COMMIT of the transaction that ran `marker`, then cut: committed, unheard.
    pub fn after_commit_of(marker: &'static str) -> Cut {
        Cut {
            marker,
            at_commit: true,
            deliver: true,
            refuse_for: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct Plan {
    armed: Option<Cut>,
    /// Chaos: every COMMIT (of any transaction) is cut after delivery with this probability.
    random_commit_cuts: f64,
    refuse_until: Option<Instant>,
}

struct Shared {
    plan: Mutex<Plan>,
    fired: AtomicU64,
    upstream: String,
    /// Bumped when a cut starts a refusal period: connections opened before it are cut at their
    /// next message, so the whole catalog is away, not just one connection.
    epoch: AtomicU64,
}

/// A proxy in front of Postgres at `upstream` (host:port).
pub struct PgProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl PgProxy {
    pub fn start(upstream: &str) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            plan: Mutex::new(Plan::default()),
            fired: AtomicU64::new(0),
            upstream: upstream.to_string(),
            epoch: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let refusing = accept_shared
                    .plan
                    .lock()
                    .unwrap()
                    .refuse_until
                    .is_some_and(|until| Instant::now() < until);
                if refusing {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let shared = accept_shared.clone();
                std::thread::spawn(move || serve(shared, client));
            }
        });
        PgProxy { port, shared }
    }

    /// The proxy URL for a database URL that points at the upstream.
    pub fn url_for(&self, database_url: &str) -> String {
        let mut url = url::Url::parse(database_url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }

    /// The next matching transaction or statement is cut as `cut` says (once).
    pub fn arm(&self, cut: Cut) {
        self.shared.plan.lock().unwrap().armed = Some(cut);
    }

    pub fn set_random_commit_cuts(&self, probability: f64) {
        self.shared.plan.lock().unwrap().random_commit_cuts = probability;
    }

    /// Cuts made so far.
    pub fn fired(&self) -> u64 {
        self.shared.fired.load(Ordering::Relaxed)
    }
}

/// For an upstream `postgres://...@host:port/db` URL, `host:port`.
pub fn upstream_of(database_url: &str) -> String {
    let url = url::Url::parse(database_url).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
}

fn serve(shared: Arc<Shared>, mut client: TcpStream) {
    let Ok(mut server) = TcpStream::connect(&shared.upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let cut = Arc::new(AtomicBool::new(false));
    let (mut server_read, mut client_write) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    let replies_cut = cut.clone();
    // Server -> client: relayed until the connection is cut (a reply read after the cut flag was
    // set is never relayed).
    std::thread::spawn(move || {
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let read = match server_read.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if replies_cut.load(Ordering::SeqCst)
                || client_write.write_all(&buffer[..read]).is_err()
            {
                break;
            }
        }
        let _ = client_write.shutdown(Shutdown::Both);
    });
    let mut connection = Connection {
        epoch: shared.epoch.load(Ordering::SeqCst),
        ..Connection::default()
    };
    let result = relay_client(&shared, &mut connection, &mut client, &mut server, &cut);
    if result.is_err() || cut.load(Ordering::SeqCst) {
        let _ = server.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
    }
}

/// What the proxy tracks of one client connection.
#[derive(Default)]
struct Connection {
    epoch: u64,
    statements: HashMap<Vec<u8>, String>,
    /// The marker of the armed cut ran in the open transaction (or, autocommit: just now).
    marked: bool,
    /// A cut waits for the Sync that ends this extended-protocol exchange.
    cut_at_sync: Option<bool>,
}

fn relay_client(
    shared: &Shared,
    connection: &mut Connection,
    client: &mut TcpStream,
    server: &mut TcpStream,
    cut: &AtomicBool,
) -> std::io::Result<()> {
    // Startup: untyped messages until the StartupMessage itself.
    loop {
        let mut length = [0u8; 4];
        client.read_exact(&mut length)?;
        let len = u32::from_be_bytes(length) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        client.read_exact(&mut body)?;
        server.write_all(&length)?;
        server.write_all(&body)?;
        let code = body
            .get(..4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()));
        // SSLRequest and GSSENCRequest are answered with one byte; the startup follows.
        if !matches!(code, Some(80877103) | Some(80877104)) {
            break;
        }
    }
    loop {
        let mut header = [0u8; 5];
        client.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        client.read_exact(&mut body)?;
        if shared.epoch.load(Ordering::SeqCst) != connection.epoch {
            cut.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let decision = decide(shared, connection, header[0], &body);
        match decision {
            Decision::Forward => {
                server.write_all(&header)?;
                server.write_all(&body)?;
            }
            Decision::CutAfter | Decision::CutBefore => {
                cut.store(true, Ordering::SeqCst);
                if decision == Decision::CutAfter {
                    server.write_all(&header)?;
                    server.write_all(&body)?;
                    server.flush()?;
                }
                shared.fired.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Forward,
    CutAfter,
    CutBefore,
}

fn cstring(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => (&bytes[..end], &bytes[end + 1..]),
        None => (bytes, &[]),
    }
}

fn is_commit(query: &str) -> bool {
    query
        .trim()
        .trim_end_matches(';')
        .eq_ignore_ascii_case("commit")
}

fn decide(shared: &Shared, connection: &mut Connection, kind: u8, body: &[u8]) -> Decision {
    let mut plan = shared.plan.lock().unwrap();
    let plan = &mut *plan;
    let ran = match kind {
        b'Q' => Some(String::from_utf8_lossy(cstring(body).0).into_owned()),
        b'P' => {
            let (name, rest) = cstring(body);
            let query = String::from_utf8_lossy(cstring(rest).0).into_owned();
            connection.statements.insert(name.to_vec(), query);
            None
        }
        b'B' => {
            let (_portal, rest) = cstring(body);
            let (statement, _) = cstring(rest);
            connection.statements.get(statement).cloned()
        }
        b'S' => {
            if let Some(deliver) = connection.cut_at_sync.take() {
                return fire(deliver);
            }
            None
        }
        _ => None,
    };
    let Some(query) = ran else {
        return Decision::Forward;
    };
    let armed = plan.armed.clone();
    if is_commit(&query) {
        let marked = std::mem::take(&mut connection.marked);
        if let Some(armed) = armed.filter(|a| a.at_commit && marked) {
            return finish(shared, plan, connection, kind, armed.deliver);
        }
        if plan.random_commit_cuts > 0.0 && rand::random::<f64>() < plan.random_commit_cuts {
            return finish(shared, plan, connection, kind, true);
        }
        return Decision::Forward;
    }
    if query.trim().eq_ignore_ascii_case("rollback") {
        connection.marked = false;
    }
    if let Some(armed) = armed.filter(|a| query.contains(a.marker)) {
        if armed.at_commit {
            connection.marked = true;
        } else {
            return finish(shared, plan, connection, kind, armed.deliver);
        }
    }
    Decision::Forward
}

/// Uses up the armed cut (starting its refusal period); a simple query is cut at once, an
/// extended-protocol one at the Sync that runs it.
fn finish(
    shared: &Shared,
    plan: &mut Plan,
    connection: &mut Connection,
    kind: u8,
    deliver: bool,
) -> Decision {
    if let Some(armed) = plan.armed.take() {
        if !armed.refuse_for.is_zero() {
            plan.refuse_until = Some(Instant::now() + armed.refuse_for);
            shared.epoch.fetch_add(1, Ordering::SeqCst);
            connection.epoch = shared.epoch.load(Ordering::SeqCst);
        }
    }
    connection.marked = false;
    if kind == b'Q' || !deliver {
        return fire(deliver);
    }
    connection.cut_at_sync = Some(deliver);
    Decision::Forward
}

fn fire(deliver: bool) -> Decision {
    if deliver {
        Decision::CutAfter
    } else {
        Decision::CutBefore
    }
}

/// A proxy in front of an HTTP server (the S3 server) that resets a share of connections, at
/// accept or in the middle of a transfer.
pub struct ResetProxy {
    pub port: u16,
    resets: Arc<AtomicU64>,
    /// The share of connections reset, as f64 bits.
    probability: Arc<AtomicU64>,
}

impl ResetProxy {
    pub fn start(upstream: &str, probability: f64, seed: u64) -> ResetProxy {
        use rand::{Rng, SeedableRng};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let resets = Arc::new(AtomicU64::new(0));
        let counter = resets.clone();
        let share = Arc::new(AtomicU64::new(probability.to_bits()));
        let current = share.clone();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                // Reset at once, or after this many bytes from the server.
                let probability = f64::from_bits(current.load(Ordering::Relaxed));
                let reset_after: Option<usize> =
                    rng.gen_bool(probability).then(|| rng.gen_range(0..4096));
                let counter = counter.clone();
                std::thread::spawn(move || pump(client, server, reset_after, counter));
            }
        });
        ResetProxy {
            port,
            resets,
            probability: share,
        }
    }

    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    pub fn set_probability(&self, probability: f64) {
        self.probability
            .store(probability.to_bits(), Ordering::Relaxed);
    }
}

fn pump(client: TcpStream, server: TcpStream, reset_after: Option<usize>, resets: Arc<AtomicU64>) {
    let reset = |stream: &TcpStream| {
        // SO_LINGER 0: close sends RST.
        let _ = socket_linger_zero(stream);
        let _ = stream.shutdown(Shutdown::Both);
    };
    let (mut client_read, mut server_write) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let (mut server_read, mut client_write) = (server, client);
    let mut buffer = [0u8; 16 * 1024];
    let mut relayed = 0usize;
    loop {
        let read = match server_read.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if let Some(limit) = reset_after {
            if relayed + read > limit {
                let _ = client_write.write_all(&buffer[..limit.saturating_sub(relayed)]);
                resets.fetch_add(1, Ordering::Relaxed);
                reset(&client_write);
                reset(&server_read);
                return;
            }
        }
        if client_write.write_all(&buffer[..read]).is_err() {
            break;
        }
        relayed += read;
    }
    let _ = client_write.shutdown(Shutdown::Write);
}

fn socket_linger_zero(stream: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
