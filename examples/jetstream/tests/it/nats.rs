//! A throwaway `nats-server -js`: on a free port of 127.0.0.1, its file store in a temporary
//! directory that outlives restarts of the server and is removed with the handle.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `nats-server` package puts the binary; `PATH` is searched first.
const DEBIAN_BIN: &str = "/usr/sbin/nats-server";

/// How long a start may take before the test fails (JetStream recovers its store first).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The line the server logs once it accepts clients, JetStream recovered.
const READY: &str = "Server is ready";

/// A running (or stopped) `nats-server` with JetStream. Dropping it kills the server and
/// removes its store.
pub(crate) struct NatsServer {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with an empty store.
    ///
    /// # Panics
    ///
    /// When `nats-server` is not installed (the message says how to install it) or does not
    /// become ready.
    pub(crate) fn start() -> Self {
        Self::with_config("")
    }

    /// Starts a server with an empty store and `config` (nats-server's configuration
    /// format, for example `max_payload: 4096`) as its configuration file.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub(crate) fn with_config(config: &str) -> Self {
        let bin = find_bin().unwrap_or_else(|| {
            panic!(
                "nats-server is not installed: `apt-get install -y nats-server` (.ci/run does \
                 this); the JetStream example's tests need a real server"
            )
        });
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut server = Self {
            bin,
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        std::fs::write(server.config_file(), config).unwrap();
        server.start_again();
        server
    }

    /// The client URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server cleanly (SIGTERM: JetStream writes out its store) and waits for it.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM nats-server: {status}");
        let deadline = Instant::now() + START_TIMEOUT;
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server on the same port with the same store, and waits until it is ready.
    pub(crate) fn start_again(&mut self) {
        assert!(self.child.is_none(), "nats-server is running already");
        let log = self.log_file();
        let ready_before = ready_lines(&log);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .arg("-c")
            .arg(self.config_file())
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while ready_lines(&log) <= ready_before {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "nats-server exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not ready after {START_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn config_file(&self) -> PathBuf {
        self.dir.path().join("nats.conf")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn find_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from(DEBIAN_BIN)).filter(|p| p.is_file()))
}

fn ready_lines(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |s| s.matches(READY).count())
}
