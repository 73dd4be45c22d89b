//! `cargo xtask wasm [--test] [--screenshot]`: the capture inspector (`crates/inspector`), walproto
//! compiled to `wasm32-unknown-unknown`.
//!
//! Always: builds walproto alone for the target (no default features: the parser-only use),
//! then the inspector's module with the `wasm` profile, assembles the static site (the module
//! and `crates/inspector/web/`) in `target/inspector/`, and prints the module's size.
//!
//! `--test`: walproto's decoding under wasm in Node.js (`crates/inspector/tests/node.mjs`: every
//! recorded capture against its expected lines, and bad input), then end to end in headless
//! Chromium: the page, served by a small static file server of this process, opens each
//! recorded capture (`?file=`) and its lines must be `walstream decode`'s for the same file
//! byte for byte; a truncated capture, a foreign file and a missing one must each show their
//! error on the page, in the CLI's words, within the time limit. Fails if the module is over
//! [`MAX_MODULE_SIZE`].
//!
//! `--screenshot`: writes the README's screenshot, `docs/inspector.png`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{cargo, run, workspace_root, Result};

/// The target the inspector is built for.
const TARGET: &str = "wasm32-unknown-unknown";

/// The module's file name, as cargo writes it and the page fetches it.
const MODULE: &str = "walcap_inspector.wasm";

/// The size the decoder module must stay under (issue 19): a page that starts at once on a
/// slow connection.
const MAX_MODULE_SIZE: u64 = 200_000;

/// How long one page load may take in Chromium before it counts as a hang. A capture decodes
/// in well under a second; Chromium starts in about two.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The virtual time Chromium gives the page before it dumps the DOM or takes the screenshot:
/// the page's fetches and the decoding finish long before (virtual time waits for the network).
const VIRTUAL_TIME_MS: &str = "15000";

/// Where the README's screenshot is written.
const SCREENSHOT: &str = "docs/inspector.png";
/// What the screenshot shows: a capture of protocol 2 with an update by replica identity
/// index selected.
const SCREENSHOT_QUERY: &str = "file=testdata/pg16-v2-stream.walcap&select=47";

/// `cargo xtask wasm [--test] [--screenshot]`.
pub(crate) fn main(args: &[String]) -> Result<()> {
    let mut test = false;
    let mut screenshot = false;
    for arg in args {
        match arg.as_str() {
            "--test" => test = true,
            "--screenshot" => screenshot = true,
            other => {
                return Err(format!(
                    "wasm: unknown argument {other:?} (usage: cargo xtask wasm [--test] \
                     [--screenshot])"
                ))
            }
        }
    }
    let site = build()?;
    if test {
        let size = fs::metadata(site.join(MODULE))
            .map_err(|e| format!("{}: {e}", site.join(MODULE).display()))?
            .len();
        if size > MAX_MODULE_SIZE {
            return Err(format!(
                "{MODULE} is {size} bytes, over the {MAX_MODULE_SIZE}-byte budget"
            ));
        }
        node(&site)?;
        chromium_end_to_end(&site)?;
    }
    if screenshot {
        take_screenshot(&site)?;
    }
    Ok(())
}

/// Builds walproto alone and the inspector for [`TARGET`], assembles the site and prints the
/// module's size; returns the site's directory.
fn build() -> Result<PathBuf> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("running rustup: {e}"))?;
    if !String::from_utf8_lossy(&installed.stdout).contains(TARGET) {
        run(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    println!("==> walproto for {TARGET} (no default features)");
    run(Command::new(cargo()).args([
        "build",
        "-p",
        "walproto",
        "--no-default-features",
        "--target",
        TARGET,
    ]))?;
    println!("==> the inspector's module (profile wasm)");
    run(Command::new(cargo()).args([
        "build",
        "-p",
        "walcap-inspector",
        "--lib",
        "--target",
        TARGET,
        "--profile",
        "wasm",
    ]))?;
    let built = target_dir().join(TARGET).join("wasm").join(MODULE);
    let site = target_dir().join("inspector");
    fs::create_dir_all(&site).map_err(|e| format!("{}: {e}", site.display()))?;
    copy(&built, &site.join(MODULE))?;
    let web = workspace_root().join("crates/inspector/web");
    for entry in fs::read_dir(&web).map_err(|e| format!("{}: {e}", web.display()))? {
        let path = entry.map_err(|e| format!("{}: {e}", web.display()))?.path();
        if let Some(name) = path.file_name() {
            copy(&path, &site.join(name))?;
        }
    }
    let size = fs::metadata(&built)
        .map_err(|e| format!("{}: {e}", built.display()))?
        .len();
    println!(
        "{MODULE}: {size} bytes ({:.1} KiB; the budget is {MAX_MODULE_SIZE} bytes)\nsite: {} \
         (serve it, e.g. `python3 -m http.server -d {}`, and open index.html)",
        size as f64 / 1024.0,
        site.display(),
        site.display()
    );
    Ok(site)
}

/// The Node.js half of `--test`: `crates/inspector/tests/node.mjs` on the built module.
fn node(site: &Path) -> Result<()> {
    println!("\n==> walproto's decoding under wasm, in Node.js");
    run(Command::new("node")
        .arg(workspace_root().join("crates/inspector/tests/node.mjs"))
        .arg(site.join(MODULE))
        .arg(workspace_root().join("testdata")))
}

/// The Chromium half of `--test`.
fn chromium_end_to_end(site: &Path) -> Result<()> {
    println!("\n==> the page in headless Chromium against `walstream decode`");
    let browser = Browser::find()?;
    run(Command::new(cargo()).args(["build", "-p", "walstream-cli", "--bin", "walstream"]))?;
    let walstream = target_dir().join("debug").join("walstream");
    let testdata = workspace_root().join("testdata");
    let scratch = std::env::temp_dir().join(format!("walcap-inspector-{}", std::process::id()));
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    // Bad input, written where the server finds it: a capture cut inside a frame, and a file
    // that is not a capture at all.
    let good = fs::read(testdata.join("pg15-v1.walcap")).map_err(|e| format!("testdata: {e}"))?;
    let cut = good.get(..good.len() * 2 / 3).unwrap_or_default();
    write(&scratch.join("truncated.walcap"), cut)?;
    write(
        &scratch.join("foreign.walcap"),
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    )?;
    let server = Server::start(site, &testdata, &scratch)?;

    let mut captures: Vec<PathBuf> = fs::read_dir(&testdata)
        .map_err(|e| format!("{}: {e}", testdata.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "walcap"))
        .collect();
    captures.sort();
    if captures.is_empty() {
        return Err(format!("no captures in {}", testdata.display()));
    }
    let result = (|| {
        for capture in &captures {
            let name = file_name(capture);
            let cli = decode_with_cli(&walstream, capture)?;
            if !cli.success {
                return Err(format!("walstream decode {name} failed: {}", cli.stderr));
            }
            let page = browser.load(&server.url(&format!("testdata/{name}")))?;
            if page.state != "done" {
                return Err(format!(
                    "{name}: the page's state is {:?}, not \"done\"; its error: {}",
                    page.state, page.error
                ));
            }
            compare(&name, &page.jsonl, &cli.stdout)?;
            println!(
                "ok {name}: the page's {} lines are walstream decode's",
                page.jsonl.lines().count()
            );
        }
        for (name, url, want) in [
            (
                "a truncated capture",
                server.url("scratch/truncated.walcap"),
                "truncated frame",
            ),
            (
                "a foreign file",
                server.url("scratch/foreign.walcap"),
                "not a WALCAP1 capture file",
            ),
        ] {
            let file = scratch.join(url.rsplit('/').next().unwrap_or_default());
            let cli = decode_with_cli(&walstream, &file)?;
            let page = browser.load(&url)?;
            // The CLI says `error: PATH: WHAT`; the page says WHAT in a sentence of its own.
            let what = cli
                .stderr
                .lines()
                .last()
                .and_then(|l| l.split_once(": ").map(|(_, rest)| rest))
                .and_then(|l| l.split_once(": ").map(|(_, rest)| rest))
                .unwrap_or_default();
            if page.state != "error" || !page.error.contains(want) || what.is_empty() {
                return Err(format!(
                    "{name}: state {:?}, error {:?} (want one saying {want:?})",
                    page.state, page.error
                ));
            }
            if !page.error.contains(what) {
                return Err(format!(
                    "{name}: the page says {:?}, walstream decode {what:?}",
                    page.error
                ));
            }
            compare(name, &page.jsonl, &cli.stdout)?;
            println!("ok {name}: {}", page.error);
        }
        let page = browser.load(&server.url("testdata/no-such-file.walcap"))?;
        if page.state != "error" || !page.error.contains("HTTP 404") {
            return Err(format!(
                "a missing file: state {:?}, error {:?}",
                page.state, page.error
            ));
        }
        println!("ok a missing file: {}", page.error);
        Ok(())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result?;
    println!(
        "inspector end to end: {} captures identical to walstream decode, 3 bad inputs shown",
        captures.len()
    );
    Ok(())
}

/// `--screenshot`: the page with [`SCREENSHOT_QUERY`], written to [`SCREENSHOT`].
fn take_screenshot(site: &Path) -> Result<()> {
    let browser = Browser::find()?;
    let testdata = workspace_root().join("testdata");
    let server = Server::start(site, &testdata, &testdata)?;
    let out = workspace_root().join(SCREENSHOT);
    let url = server.url(&format!("index.html?{SCREENSHOT_QUERY}"));
    browser.run(&[
        "--hide-scrollbars",
        "--window-size=1280,860",
        &format!("--screenshot={}", out.display()),
        &url,
    ])?;
    let size = fs::metadata(&out)
        .map_err(|e| format!("{}: {e}", out.display()))?
        .len();
    println!("{}: {size} bytes", out.display());
    Ok(())
}

/// Fails naming the first line where the page and the CLI differ.
fn compare(name: &str, page: &str, cli: &str) -> Result<()> {
    if page == cli {
        return Ok(());
    }
    let (n, (p, c)) = page
        .lines()
        .chain(std::iter::repeat("<end>"))
        .zip(cli.lines().chain(std::iter::repeat("<end>")))
        .enumerate()
        .find(|(_, (p, c))| p != c)
        .unwrap_or((0, ("<same lines>", "<different line ends>")));
    Err(format!(
        "{name}: line {} differs\n  page: {p}\n  cli:  {c}",
        n + 1
    ))
}

/// What `walstream decode FILE` printed.
struct CliOutput {
    stdout: String,
    stderr: String,
    success: bool,
}

fn decode_with_cli(walstream: &Path, file: &Path) -> Result<CliOutput> {
    let out = Command::new(walstream)
        .arg("decode")
        .arg(file)
        .env("RUST_LOG", "error")
        .output()
        .map_err(|e| format!("running {}: {e}", walstream.display()))?;
    Ok(CliOutput {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        success: out.status.success(),
    })
}

/// Headless Chromium, run once per page as root needs it.
struct Browser {
    program: String,
    runs: AtomicU32,
}

/// What the page showed when Chromium dumped it.
struct Page {
    /// `<body data-state>`: idle, loading, done or error.
    state: String,
    /// The text of `#jsonl`: the lines as `walstream decode` prints them.
    jsonl: String,
    /// The text of `#error` (empty when hidden and never set).
    error: String,
}

impl Browser {
    /// `$CHROMIUM`, else `chromium` or `chromium-browser` on the `PATH`.
    fn find() -> Result<Browser> {
        let candidates = std::env::var("CHROMIUM")
            .map(|c| vec![c])
            .unwrap_or_else(|_| vec!["chromium".to_owned(), "chromium-browser".to_owned()]);
        for program in candidates {
            let found = Command::new(&program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if found {
                return Ok(Browser {
                    program,
                    runs: AtomicU32::new(0),
                });
            }
        }
        Err(
            "no Chromium found: install Debian's `chromium` (apt-get install chromium) or set \
             CHROMIUM to its path"
                .to_owned(),
        )
    }

    /// Loads `url` and reads the page once its fetches and decoding are done. A page still
    /// `loading` when Chromium's virtual time ran out (its fetches are real I/O, which a busy
    /// machine can hold past the budget) is loaded again, twice at most: a page that never
    /// finishes still fails.
    fn load(&self, url: &str) -> Result<Page> {
        let mut page = self.load_once(url)?;
        for _ in 0..2 {
            if page.state != "loading" {
                break;
            }
            page = self.load_once(url)?;
        }
        Ok(page)
    }

    fn load_once(&self, url: &str) -> Result<Page> {
        let dom = self.run(&["--dump-dom", url])?;
        let state = between(&dom, "<body data-state=\"", "\"").unwrap_or_default();
        let jsonl = between(&dom, "<pre id=\"jsonl\">", "</pre>").unwrap_or_default();
        let error = between(&dom, "role=\"alert\"", "</p>")
            .and_then(|s| s.split_once('>').map(|(_, text)| text.to_owned()))
            .unwrap_or_default();
        Ok(Page {
            state,
            jsonl: unescape(&jsonl),
            error: unescape(&error),
        })
    }

    /// Runs Chromium headless on `args` in a fresh profile directory, killing it after
    /// [`PAGE_TIMEOUT`]; returns its stdout.
    fn run(&self, args: &[&str]) -> Result<String> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("walcap-chromium-{}-{n}", std::process::id()));
        let out_file = profile.with_extension("out");
        let stdout = fs::File::create(&out_file).map_err(|e| format!("{out_file:?}: {e}"))?;
        let mut child = Command::new(&self.program)
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.program))?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if started.elapsed() > PAGE_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "Chromium did not finish {args:?} within {PAGE_TIMEOUT:?}: the page hangs"
                    ));
                }
                Ok(None) => thread::sleep(Duration::from_millis(50)),
                Err(e) => break Err(format!("waiting for Chromium: {e}")),
            }
        };
        let output = fs::read_to_string(&out_file).unwrap_or_default();
        let _ = fs::remove_dir_all(&profile);
        let _ = fs::remove_file(&out_file);
        let status = status?;
        if !status.success() {
            return Err(format!("Chromium on {args:?} failed: {status}"));
        }
        Ok(output)
    }
}

/// The text between the first `start` and the `end` after it.
fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let rest = text.get(from..)?;
    Some(rest.get(..rest.find(end)?)?.to_owned())
}

/// Undoes the HTML serialisation of a text node: `&amp;`, `&lt;`, `&gt;` and `&nbsp;`, the
/// only escapes it writes.
fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// A static file server on 127.0.0.1 for the page: the site at `/`, `testdata/` at
/// `/testdata/` and a scratch directory at `/scratch/`. GET only, one request per connection,
/// on a thread that lives as long as the process (xtask exits after the test).
struct Server {
    port: u16,
}

impl Server {
    fn start(site: &Path, testdata: &Path, scratch: &Path) -> Result<Server> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding 127.0.0.1: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("local address: {e}"))?
            .port();
        let roots = Arc::new([
            ("/testdata/", testdata.to_path_buf()),
            ("/scratch/", scratch.to_path_buf()),
            ("/", site.to_path_buf()),
        ]);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let roots = Arc::clone(&roots);
                thread::spawn(move || serve(stream, roots.as_slice()));
            }
        });
        Ok(Server { port })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("index.html") {
            format!("http://127.0.0.1:{}/{path}", self.port)
        } else {
            format!("http://127.0.0.1:{}/index.html?file={path}", self.port)
        }
    }
}

/// Answers one request: the file under the root its path starts with, or 404.
fn serve(mut stream: TcpStream, roots: &[(&str, PathBuf)]) {
    let mut line = String::new();
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // The rest of the request head, unread: Chromium sends no body with a GET.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let path = line.split(' ').nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    let path = if path == "/" { "/index.html" } else { path };
    let file = roots
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix))
        .and_then(|(prefix, dir)| {
            let rel = path.get(prefix.len()..)?;
            // Plain names only: nothing above the served directories.
            (!rel.is_empty() && !rel.contains("..") && !rel.contains('/')).then(|| dir.join(rel))
        })
        .and_then(|p| fs::read(p).ok());
    let response = match file {
        Some(body) => {
            let kind = match path.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js" | "mjs") => "text/javascript",
                Some("wasm") => "application/wasm",
                _ => "application/octet-stream",
            };
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: \
                 close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            r
        }
        None => {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
    };
    let _ = stream.write_all(&response);
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
