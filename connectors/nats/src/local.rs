//! Local `nats-server` processes for tests, examples and benchmarks: a single JetStream server or
//! a three-server cluster on 127.0.0.1, each with free ports and a temporary store directory,
//! killed by PID when dropped (also when a test fails and unwinds).
//!
//! The binary is `nats-server` from `PATH`, or the path in `WEIR_NATS_SERVER`. A server counts as
//! started when its monitoring endpoint `/healthz?js-enabled-only=true` answers 200.
//!
//! ```no_run
//! let server = weir_nats::local::LocalServer::start().expect("nats-server on PATH");
//! println!("JetStream at {}", server.url());
//! // dropped: the process is killed and its store directory removed
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a local server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// The binary is not installed (or `WEIR_NATS_SERVER` points nowhere).
    #[error(
        "`{0}` was not found: install it (Debian: apt-get install nats-server) or set WEIR_NATS_SERVER"
    )]
    NotInstalled(String),
    /// The process could not be spawned, or a file could not be written.
    #[error("could not start nats-server")]
    Io(#[from] std::io::Error),
    /// The server did not report healthy in time; its log is attached.
    #[error("nats-server did not become healthy within {timeout:?}; its log:\n{log}")]
    NotHealthy {
        /// How long it was given.
        timeout: Duration,
        /// The end of its log file.
        log: String,
    },
}

/// The `nats-server` binary to run, if it is installed.
pub fn server_binary() -> Result<PathBuf, LocalError> {
    if let Some(path) = std::env::var_os("WEIR_NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(LocalError::NotInstalled(path.display().to_string()))
        };
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| LocalError::NotInstalled("nats-server".to_owned()))
}

/// A port nobody listens on right now (the OS picks it).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `nats-server` process with JetStream, listening on 127.0.0.1.
#[derive(Debug)]
pub struct LocalServer {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    http_port: u16,
    child: Option<Child>,
    /// Keeps the store directory (and the config) until the server is dropped.
    _dir: Option<tempfile::TempDir>,
}

impl LocalServer {
    /// Starts a single JetStream server on free ports with a fresh store directory.
    pub fn start() -> Result<Self, LocalError> {
        Self::start_on(free_port()?, free_port()?)
    }

    fn start_on(port: u16, http_port: u16) -> Result<Self, LocalError> {
        let binary = server_binary()?;
        let dir = tempfile::Builder::new().prefix("weir-nats-").tempdir()?;
        let config = dir.path().join("server.conf");
        let log = dir.path().join("server.log");
        write_config(
            &config,
            &ServerConfig {
                name: "weir-local",
                port,
                http_port,
                store: &dir.path().join("store"),
                log: &log,
                cluster: None,
            },
        )?;
        let mut server = Self {
            binary,
            config,
            log,
            port,
            http_port,
            child: None,
            _dir: Some(dir),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), LocalError> {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server answers its JetStream health check; gives up at once if it logged
    /// a fatal error (it exits then).
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), LocalError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if healthz(self.http_port) {
                return Ok(());
            }
            if tail(&self.log).contains("[FTL]") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(LocalError::NotHealthy {
            timeout,
            log: tail(&self.log),
        })
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL (no shutdown: what a crash looks like) and reaps it. The
    /// store directory stays, so [`restart`](Self::restart) finds what was stored.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same ports and store directory (after [`kill`](Self::kill);
    /// a running server is killed first) and waits until it is healthy.
    pub fn restart(&mut self) -> Result<(), LocalError> {
        self.kill();
        self.spawn()?;
        self.wait_healthy(START_TIMEOUT)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a server and waits for it, as tests and examples want it.
pub fn start_server() -> Result<LocalServer, LocalError> {
    start_server_on(free_port)
}

/// [`start_server`] on ports from `pick`. A port picked free may be taken before the server binds
/// it (by another server starting, or as the local port of any outgoing connection): the server
/// then exits with "address already in use", and is started again on new ports, up to three
/// more times.
fn start_server_on(
    mut pick: impl FnMut() -> std::io::Result<u16>,
) -> Result<LocalServer, LocalError> {
    let mut retries = 3;
    loop {
        let server = LocalServer::start_on(pick()?, pick()?)?;
        match server.wait_healthy(START_TIMEOUT) {
            Ok(()) => return Ok(server),
            Err(LocalError::NotHealthy { log, .. })
                if retries > 0 && log.contains("address already in use") =>
            {
                retries -= 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A JetStream cluster of servers on 127.0.0.1 (named `weir-0`, `weir-1`...), routed to each
/// other, each with its own ports and store directory.
#[derive(Debug)]
pub struct LocalCluster {
    servers: Vec<LocalServer>,
}

impl LocalCluster {
    /// Starts `size` clustered servers and waits until each is healthy.
    pub fn start(size: usize) -> Result<Self, LocalError> {
        let binary = server_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("weir-nats-cluster-")
            .tempdir()?;
        let mut ports = Vec::with_capacity(size);
        for _ in 0..size {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, cluster)| format!("\"nats-route://127.0.0.1:{cluster}\""))
            .collect();
        let mut servers = Vec::with_capacity(size);
        for (k, &(port, http_port, cluster_port)) in ports.iter().enumerate() {
            let name = format!("weir-{k}");
            let config = dir.path().join(format!("{name}.conf"));
            let log = dir.path().join(format!("{name}.log"));
            let others: Vec<String> = (0..size)
                .filter(|&j| j != k)
                .map(|j| routes[j].clone())
                .collect();
            write_config(
                &config,
                &ServerConfig {
                    name: &name,
                    port,
                    http_port,
                    store: &dir.path().join(&name),
                    log: &log,
                    cluster: Some((cluster_port, &others.join(", "))),
                },
            )?;
            let mut server = LocalServer {
                binary: binary.clone(),
                config,
                log,
                port,
                http_port,
                child: None,
                _dir: None,
            };
            server.spawn()?;
            servers.push(server);
        }
        // The directory lives as long as the first server.
        servers[0]._dir = Some(dir);
        for server in &servers {
            server.wait_healthy(START_TIMEOUT)?;
        }
        Ok(Self { servers })
    }

    /// All client URLs, comma-separated (what [`connect`](crate::connect) takes).
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(LocalServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The servers.
    pub fn servers(&mut self) -> &mut [LocalServer] {
        &mut self.servers
    }
}

struct ServerConfig<'a> {
    name: &'a str,
    port: u16,
    http_port: u16,
    store: &'a Path,
    log: &'a Path,
    /// The cluster port and the quoted routes to the other servers.
    cluster: Option<(u16, &'a str)>,
}

fn write_config(path: &Path, c: &ServerConfig<'_>) -> std::io::Result<()> {
    let mut text = format!(
        "server_name: \"{}\"\nlisten: \"127.0.0.1:{}\"\nhttp: \"127.0.0.1:{}\"\nlog_file: \"{}\"\n\
         jetstream {{\n  store_dir: \"{}\"\n}}\n",
        c.name,
        c.port,
        c.http_port,
        c.log.display(),
        c.store.display()
    );
    if let Some((cluster_port, routes)) = c.cluster {
        text.push_str(&format!(
            "cluster {{\n  name: \"weir\"\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [{routes}]\n}}\n"
        ));
    }
    std::fs::write(path, text)
}

/// Whether `GET /healthz?js-enabled-only=true` answers 200.
fn healthz(http_port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", http_port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1:{http_port}\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

/// The last few KiB of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4096);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// For tests: `Ok(Some(server))`, or `Ok(None)` after printing why when no server can be started
/// outside CI (the caller skips); under `CI=true` a server that cannot be started is an error.
pub fn server_for_tests() -> Result<Option<LocalServer>, LocalError> {
    skip_unless_ci(start_server())
}

/// [`server_for_tests`] for a cluster of `size` servers.
pub fn cluster_for_tests(size: usize) -> Result<Option<LocalCluster>, LocalError> {
    skip_unless_ci(LocalCluster::start(size))
}

fn skip_unless_ci<T>(started: Result<T, LocalError>) -> Result<Option<T>, LocalError> {
    match started {
        Ok(server) => Ok(Some(server)),
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "SKIPPED: no NATS server could be started ({error}); under CI=true this fails"
            );
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken between the pick and the server's bind: the server is started again on new
    /// ports. Before, the start failed (after waiting out the 20 s timeout).
    #[test]
    fn a_server_whose_port_was_taken_starts_on_other_ports() {
        if server_binary().is_err() {
            eprintln!("nats-server is not installed: skipped");
            return;
        }
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut picks = 0;
        let server = start_server_on(|| {
            picks += 1;
            if picks == 1 {
                Ok(taken_port)
            } else {
                free_port()
            }
        })
        .unwrap();
        assert_ne!(server.port(), taken_port);
        assert_eq!(picks, 4, "two ports for each of the two starts");
    }
}
