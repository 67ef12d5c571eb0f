//! A throw-away PostgreSQL cluster per test: `initdb` in a temp dir, `postgres` on a free
//! loopback port with its unix socket in that dir, stopped and removed on drop (also when
//! the test panics: the drop runs while unwinding). As root it runs as the system user
//! `ctxpg` (created if missing) through `runuser -u ctxpg --`, since PostgreSQL refuses to
//! run as root; if the test process dies without unwinding, the kernel sends `runuser` a
//! SIGTERM (`PR_SET_PDEATHSIG`), which it passes on to `postgres`.
//!
//! Nothing has to be installed or running beforehand but the server binaries
//! (`.ci/test` installs Debian's `postgresql`); when they are missing, or the server does
//! not start, [`Cluster::start`] panics with the reason.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The system user the server runs as when the tests run as root.
const USER: &str = "ctxpg";

/// A running cluster; dropping it stops the server and removes its directory.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    /// The server's log (`log_connections` is on: a line per session).
    log: PathBuf,
    server: Option<Child>,
}

impl Cluster {
    /// Starts a fresh cluster, or panics saying why it could not.
    pub fn start() -> Cluster {
        let bin = server_binaries().unwrap_or_else(|why| panic!("{why}"));
        let run_as = run_as().unwrap_or_else(|why| panic!("{why}"));
        let dir = temp_dir();
        let mut cluster = Cluster {
            dir,
            port: 0,
            log: PathBuf::new(),
            server: None,
        };
        // From here on, a panic drops `cluster`, which cleans up whatever was started.
        let data = cluster.dir.join("data");
        let socket = cluster.dir.join("socket");
        for sub in [&data, &socket] {
            fs::create_dir(sub).expect("a dir in the cluster's temp dir");
            run_as.own(sub);
        }
        let initdb = run_as
            .command(&bin.join("initdb"))
            .args(["-D".as_ref(), data.as_os_str()])
            .args(["--no-sync", "--auth=trust", "--username=postgres"])
            .args(["--encoding=UTF8", "--locale=C"])
            .output()
            .unwrap_or_else(|err| panic!("could not run initdb: {err}"));
        assert!(
            initdb.status.success(),
            "initdb failed ({}):\n{}{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );

        // A free port can be taken by someone else before the server binds it: retry.
        let mut why = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let log_path = cluster.dir.join(format!("postgres-{port}.log"));
            let log = fs::File::create(&log_path).expect("a log file in the temp dir");
            let mut command = run_as.command(&bin.join("postgres"));
            command
                .args(["-D".as_ref(), data.as_os_str()])
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-k")
                .arg(&socket)
                .args(["-c", "lc_messages=C", "-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .args(["-c", "shared_buffers=16MB", "-c", "max_connections=50"])
                .args(["-c", "log_connections=on"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("a second log handle"))
                .stderr(log);
            // SAFETY: prctl is async-signal-safe and touches only this (child) process.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let server = command
                .spawn()
                .unwrap_or_else(|err| panic!("could not start postgres: {err}"));
            cluster.server = Some(server);
            cluster.port = port;
            cluster.log = log_path.clone();
            match cluster.wait_ready(&log_path) {
                Ok(()) => return cluster,
                Err(reason) => {
                    why = reason;
                    cluster.stop();
                    if !why.contains("could not bind") {
                        break;
                    }
                }
            }
        }
        panic!("the PostgreSQL server did not start: {why}");
    }

    /// Waits until the server accepts connections, or says why it will not.
    fn wait_ready(&mut self, log_path: &Path) -> Result<(), String> {
        let started = Instant::now();
        let log = || fs::read_to_string(log_path).unwrap_or_default();
        loop {
            let server = self.server.as_mut().expect("a started server");
            if let Ok(Some(status)) = server.try_wait() {
                return Err(format!(
                    "postgres exited at start ({status}); its log:\n{}",
                    log()
                ));
            }
            if log().contains("database system is ready to accept connections")
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "postgres was not ready after 60s; its log:\n{}",
                    log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many sessions the server has started so far (its log's "connection authorized"
    /// lines; a cancel request is not a session).
    pub fn sessions_started(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("connection authorized")
            .count()
    }

    /// A libpq URL for the superuser `postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The connection settings, for tokio-postgres.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Fast shutdown (SIGINT to the postmaster), SIGKILL after 10 s; idempotent.
    fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let postmaster = fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
        let signal = |pid: i32, sig: i32| {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, sig) };
        };
        match postmaster {
            Some(pid) => signal(pid, libc::SIGINT),
            // Not written yet: runuser passes SIGTERM on (or this is postgres itself).
            None => signal(server.id() as i32, libc::SIGTERM),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match server.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    if let Some(pid) = postmaster {
                        signal(pid, libc::SIGKILL);
                    }
                    let _ = server.kill();
                    let _ = server.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Where the server binaries are: Debian's `/usr/lib/postgresql/<newest>/bin`, else the
/// directory of an `initdb` on `PATH`.
fn server_binaries() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .ok_or_else(|| {
            "PostgreSQL's server binaries (initdb, postgres) are not installed: looked in \
             /usr/lib/postgresql/*/bin and on PATH. `bash .ci/test` installs them \
             (Debian: `apt-get install postgresql`)."
                .to_owned()
        })
}

/// Who runs the server: ourselves, or `ctxpg` through runuser when we are root.
enum RunAs {
    Me,
    User { uid: u32, gid: u32 },
}

impl RunAs {
    fn command(&self, program: &Path) -> Command {
        match self {
            RunAs::Me => Command::new(program),
            RunAs::User { .. } => {
                let mut command = Command::new("runuser");
                command.args(["-u", USER, "--"]).arg(program);
                command
            }
        }
    }

    /// Gives `path` to the server's user.
    fn own(&self, path: &Path) {
        if let RunAs::User { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .unwrap_or_else(|err| panic!("chown {} to {USER}: {err}", path.display()));
        }
    }
}

fn run_as() -> Result<RunAs, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(RunAs::Me);
    }
    // One useradd at a time within this process; another process racing us is handled by
    // looking the user up again.
    static USERADD: Mutex<()> = Mutex::new(());
    let _one = USERADD.lock().unwrap_or_else(|e| e.into_inner());
    if lookup_user().is_none() {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", USER])
            .output()
            .map_err(|err| format!("running as root, and could not run useradd to create the user {USER} PostgreSQL needs: {err}"))?;
        if lookup_user().is_none() {
            return Err(format!(
                "running as root, and `useradd {USER}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let (uid, gid) = lookup_user().expect("looked up just now");
    Ok(RunAs::User { uid, gid })
}

/// `ctxpg`'s uid and gid, from `id`.
fn lookup_user() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, USER]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A new directory under the system temp dir that the server's user can traverse.
fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "ctx-pg-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .expect("chmod the cluster's temp dir");
                return dir;
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => panic!("could not create a temp dir for the cluster: {err}"),
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
