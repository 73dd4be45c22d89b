//! Live tests of pgtest: they start every installed PostgreSQL major.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed assertion (clippy.toml's allow-*-in-tests does not \
              reach helper functions outside #[test] items)"
)]

mod lifecycle;
mod session;
mod shared;
mod standby;

/// The oldest installed major, for tests that need just one server.
fn some_major() -> u32 {
    *pgtest::installed_majors()
        .first()
        .unwrap_or_else(|| panic!("no PostgreSQL installed; {}", pgtest::INSTALL_HINT))
}

/// The postmaster's pid from `postmaster.pid` in `data`.
fn postmaster_pid(data: &std::path::Path) -> u32 {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Waits up to `secs` for `cond`, polling.
fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cond()
}

fn process_exists(pid: u32) -> bool {
    // A zombie is gone for our purposes: it no longer serves anything.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
