//! The example binary as a child process of the test.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The stream the tests publish into.
pub(crate) const STREAM: &str = "CHANGES";
/// The tests' subject prefix.
pub(crate) const PREFIX: &str = "cdc";

/// The example's command line for the tests' stream and prefix.
pub(crate) fn args(conninfo: &str, slot: &str, nats_url: &str, granularity: &str) -> Vec<String> {
    [
        "--conninfo",
        conninfo,
        "--slot",
        slot,
        "--publication",
        "p",
        "--nats-url",
        nats_url,
        "--stream",
        STREAM,
        "--subject-prefix",
        PREFIX,
        "--granularity",
        granularity,
    ]
    .map(String::from)
    .to_vec()
}

/// The example binary as a child process, its stderr appended to one log across restarts.
pub(crate) struct Example {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Example {
    pub(crate) fn start(args: Vec<String>, log: PathBuf) -> Self {
        let mut example = Self {
            args,
            log,
            child: None,
        };
        example.start_again();
        example
    }

    pub(crate) fn start_again(&mut self) {
        assert!(self.child.is_none());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_walstream-jetstream"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no last status update.
    pub(crate) fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM: a clean stop, exit status 0.
    pub(crate) fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "{status}:\n{}", self.log());
    }

    /// Waits for the example to exit by itself.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the example still runs after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the example exited with {status}:\n{}", self.log());
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The number of messages in the stream.
pub(crate) fn stored(rt: &tokio::runtime::Runtime, js: &async_nats::jetstream::Context) -> u64 {
    rt.block_on(async {
        let mut stream = js.get_stream(STREAM).await.unwrap();
        stream.info().await.unwrap().state.messages
    })
}
