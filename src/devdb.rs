//! The embedded default database: with no `DATABASE_URL`, `minion` runs a private Postgres cluster
//! from the installed server binaries in a directory under the working directory, and reuses it on
//! later calls. For development, demos and tests only: it runs with `fsync=off`.
//!
//! Postgres refuses to run as root, so when we are root the cluster runs as the `postgres` system
//! user (which Debian's postgresql packages create) and its directory belongs to that user.

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use fs2::FileExt;

/// Where the dev cluster lives unless `MINION_DEV_DIR` says otherwise.
pub const DEFAULT_DIR: &str = ".minion/postgres";
const DATABASE: &str = "minion";

/// A running dev cluster.
#[derive(Debug, Clone)]
pub struct DevDb {
    pub dir: PathBuf,
    pub port: u16,
}

impl DevDb {
    /// URL of the database `name` on this cluster.
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }
}

/// The directory from `MINION_DEV_DIR` or the default, made absolute.
pub fn default_dir() -> PathBuf {
    let dir = std::env::var_os("MINION_DEV_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
    if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or(dir)
    }
}

/// Starts the cluster in `dir` if it is not running (creating it on first use) and makes sure the
/// `minion` database exists. Safe to call from several processes at once: a lock file serializes
/// them.
pub fn ensure_running(dir: &Path) -> anyhow::Result<DevDb> {
    let binaries = find_binaries()?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let owner = cluster_owner()?;
    if let Some((uid, gid)) = owner {
        chown(dir, uid, gid)?;
    }
    let lock_path = dir.join("minion.lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock_exclusive()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;

    let data = dir.join("data");
    let port_file = dir.join("port");
    if !data.join("PG_VERSION").exists() {
        if data.exists() {
            fs::remove_dir_all(&data)
                .with_context(|| format!("cannot clear half-made {}", data.display()))?;
        }
        init_cluster(&binaries, dir, &data, owner)?;
        let port = free_port()?;
        fs::write(&port_file, port.to_string())?;
    }
    let port: u16 = fs::read_to_string(&port_file)
        .with_context(|| {
            format!(
                "{} is missing; delete {} to start over",
                port_file.display(),
                dir.display()
            )
        })?
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a port number", port_file.display()))?;
    // `pg_ctl status` only asks whether the pid in postmaster.pid is alive: after a crash or a
    // reboot that pid may belong to another process. Trust it only if that process is a postgres.
    let running = is_running(&binaries, &data, owner)? && !remove_stale_pid_file(&data)?;
    if !running {
        start(&binaries, dir, &data, port, owner)?;
    }
    // And a running cluster must accept connections, which creating the database checks.
    create_database(port)?;
    drop(lock);
    Ok(DevDb {
        dir: dir.to_path_buf(),
        port,
    })
}

/// Stops the cluster in `dir` if it runs. Returns whether it was running.
pub fn stop(dir: &Path) -> anyhow::Result<bool> {
    stop_with(dir, "fast")
}

/// Stops the cluster in `dir` with `pg_ctl stop -m MODE` (`smart`, `fast`, or `immediate`: a
/// crash, recovered at the next start). Returns whether it was running.
pub fn stop_with(dir: &Path, mode: &str) -> anyhow::Result<bool> {
    let binaries = find_binaries()?;
    let data = dir.join("data");
    if !data.join("PG_VERSION").exists() {
        return Ok(false);
    }
    let owner = cluster_owner()?;
    if !is_running(&binaries, &data, owner)? {
        return Ok(false);
    }
    let status = pg_command(&binaries.pg_ctl, owner)
        .args(["stop", "-m", mode, "-w", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .context("cannot run pg_ctl stop")?;
    if !status.success() {
        bail!("pg_ctl stop failed for {}", data.display());
    }
    Ok(true)
}

/// Whether a cluster was initialized in `dir` and is up.
pub fn status(dir: &Path) -> anyhow::Result<Option<DevDb>> {
    let binaries = find_binaries()?;
    let data = dir.join("data");
    if !data.join("PG_VERSION").exists() || !is_running(&binaries, &data, cluster_owner()?)? {
        return Ok(None);
    }
    let port = fs::read_to_string(dir.join("port"))?.trim().parse()?;
    Ok(Some(DevDb {
        dir: dir.to_path_buf(),
        port,
    }))
}

struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

/// Finds initdb and pg_ctl: Debian's /usr/lib/postgresql/<newest>/bin first (there initdb finds
/// its `postgres` beside it), then PATH.
fn find_binaries() -> anyhow::Result<Binaries> {
    let mut candidates: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort_by_key(|path| {
        path.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates.reverse();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    for dir in candidates {
        let (initdb, pg_ctl) = (dir.join("initdb"), dir.join("pg_ctl"));
        if initdb.is_file() && pg_ctl.is_file() && dir.join("postgres").is_file() {
            return Ok(Binaries { initdb, pg_ctl });
        }
    }
    bail!(
        "DATABASE_URL is not set and no Postgres server binaries (initdb, pg_ctl, postgres) were found on PATH \
         or under /usr/lib/postgresql/*/bin. Install them (Debian: apt-get install postgresql) or set \
         DATABASE_URL / --database-url to an existing database"
    )
}

/// The (uid, gid) the cluster runs as: the `postgres` user when we are root, else ourselves.
fn cluster_owner() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns null or a pointer to a static record we copy from at once.
    let record = unsafe { libc::getpwnam(name.as_ptr()) };
    if record.is_null() {
        bail!(
            "Postgres will not run as root and there is no `postgres` user to run it as. \
             Create one (useradd --system postgres, or apt-get install postgresql) or set DATABASE_URL"
        );
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*record).pw_uid, (*record).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

fn pg_command(program: &Path, owner: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
        command.env("HOME", "/tmp");
    }
    command.env_remove("PGDATA").env("LC_ALL", "C");
    command
}

fn init_cluster(
    binaries: &Binaries,
    dir: &Path,
    data: &Path,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    eprintln!(
        "minion: creating the embedded dev Postgres cluster in {}",
        data.display()
    );
    let output = pg_command(&binaries.initdb, owner)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(data)
        .current_dir(dir)
        .output()
        .context("cannot run initdb")?;
    if !output.status.success() {
        bail!(
            "initdb failed for {} (is every directory above it readable by the postgres user?): {}",
            data.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn is_running(binaries: &Binaries, data: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<bool> {
    let status = pg_command(&binaries.pg_ctl, owner)
        .arg("status")
        .arg("-D")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run pg_ctl status")?;
    Ok(status.success())
}

/// Removes `postmaster.pid` if the process it names is not a postgres (gone, or its pid reused);
/// returns whether it did.
fn remove_stale_pid_file(data: &Path) -> anyhow::Result<bool> {
    let pid_file = data.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&pid_file) else {
        return Ok(false);
    };
    let pid = text.lines().next().unwrap_or_default().trim();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !pid.is_empty() && comm.trim() == "postgres" {
        return Ok(false);
    }
    eprintln!(
        "minion: {} names process {pid}, which is not a postgres ({}); removing the stale file",
        pid_file.display(),
        if comm.is_empty() { "gone" } else { comm.trim() }
    );
    fs::remove_file(&pid_file)
        .with_context(|| format!("cannot remove the stale {}", pid_file.display()))?;
    Ok(true)
}

fn start(
    binaries: &Binaries,
    dir: &Path,
    data: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let log = dir.join("postgres.log");
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    );
    let output = pg_command(&binaries.pg_ctl, owner)
        .args(["start", "-w", "-t", "60", "-D"])
        .arg(data)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(options)
        .current_dir(dir)
        .output()
        .context("cannot run pg_ctl start")?;
    if !output.status.success() {
        let tail = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        bail!(
            "the embedded dev Postgres in {} did not start (port {port}): {}\n{}",
            data.display(),
            String::from_utf8_lossy(&output.stderr).trim(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

fn create_database(port: u16) -> anyhow::Result<()> {
    // A private runtime on a private thread: callable from sync code and from inside a runtime.
    let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    use sqlx::Connection;
                    // A cluster that is starting or recovering answers within seconds.
                    let mut tries = 0;
                    let mut conn = loop {
                        match sqlx::PgConnection::connect(&admin).await {
                            Ok(conn) => break conn,
                            Err(_) if tries < 60 => {
                                tries += 1;
                                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                            }
                            Err(err) => return Err(err.into()),
                        }
                    };
                    let exists: Option<(i32,)> =
                        sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                            .bind(DATABASE)
                            .fetch_optional(&mut conn)
                            .await?;
                    if exists.is_none() {
                        sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
                            .execute(&mut conn)
                            .await?;
                    }
                    anyhow::Ok(())
                })
            })
            .join()
            .expect("database creation thread panicked")
    })
    .with_context(|| {
        format!("the embedded dev Postgres on port {port} does not accept connections or cannot create its database; see postgres.log beside its data directory, or `minion dev stop` and try again")
    })
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free local port")?;
    Ok(listener.local_addr()?.port())
}
