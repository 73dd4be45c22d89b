//! The command line: usage errors, help, unimplemented options, unreadable files.

use crate::support::walstream;

#[test]
fn usage_errors_exit_2() {
    for args in [&[][..], &["decode"], &["decode", "a", "b"], &["frobnicate"]] {
        let run = walstream(args, b"");
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn decode_help_has_examples_and_exit_codes() {
    let run = walstream(&["decode", "--help"], b"");
    assert_eq!(run.code, 0);
    for want in [
        "--keepalives",
        "Examples:",
        "walstream decode",
        "Exit status:",
    ] {
        assert!(run.stdout.contains(want), "{want}: {}", run.stdout);
    }
    let run = walstream(&["--help"], b"");
    for want in ["tail", "record", "decode", "demo", "slot", "Exit status:"] {
        assert!(run.stdout.contains(want), "{want}: {}", run.stdout);
    }
}

#[test]
fn unimplemented_options_exit_2() {
    // The initial snapshot needs a slot of its own: refused before connecting without one.
    let run = walstream(
        &[
            "tail",
            "host=x",
            "--slot",
            "s",
            "--publication",
            "p",
            "--snapshot",
        ],
        b"",
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("--snapshot needs --create-slot"),
        "{}",
        run.stderr
    );
    // Their options are checked already: an LSN must be X/X.
    let run = walstream(
        &[
            "tail",
            "h",
            "--slot",
            "s",
            "--publication",
            "p",
            "--start",
            "16B3748",
        ],
        b"",
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("invalid LSN"), "{}", run.stderr);
}

#[test]
fn a_missing_file_exits_3() {
    let run = walstream(&["decode", "/nonexistent/capture.walcap"], b"");
    assert_eq!(run.code, 3);
    assert!(
        run.stderr
            .starts_with("error: cannot open /nonexistent/capture.walcap: "),
        "{}",
        run.stderr
    );
}

/// Runs the binary with `RUST_LOG` set to `filter` (and a user name, so that the conninfo is
/// complete); returns the exit code and stderr.
fn with_rust_log(filter: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_walstream"))
        .args(args)
        .env("RUST_LOG", filter)
        .env("USER", "walstream_test")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn rust_log_takes_per_crate_filters_and_lines_carry_timestamps() {
    // Nothing listens on port 1: walconn logs the failed attempt at debug level.
    let refused = ["slot", "list", "host=127.0.0.1 port=1 connect_timeout=5"];
    let (code, stderr) = with_rust_log("walconn=debug,info", &refused);
    assert_eq!(code, 4, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("connection attempt failed"))
        .unwrap_or_else(|| panic!("no walconn debug line: {stderr}"));
    // RFC 3339: 2026-12-03T18:57:25.154463Z
    let stamp = line.split_whitespace().next().unwrap();
    assert!(
        stamp.len() > 20 && stamp.as_bytes()[4] == b'-' && stamp.as_bytes()[10] == b'T',
        "no timestamp: {line}"
    );
    // The filter names a target: another crate's debug level does not show walconn's lines.
    let (code, stderr) = with_rust_log("walstream=debug,info", &refused);
    assert_eq!(code, 4, "{stderr}");
    assert!(!stderr.contains("connection attempt failed"), "{stderr}");
    // The error itself is printed once.
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    // A malformed filter is said once and ignored.
    let (code, stderr) = with_rust_log("walconn=loud", &refused);
    assert_eq!(code, 4, "{stderr}");
    assert_eq!(stderr.matches("ignoring RUST_LOG").count(), 1, "{stderr}");
}

#[test]
fn a_malformed_conninfo_exits_2_in_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().to_str().unwrap();
    let backup = dir.path().join("backup");
    let backup = backup.to_str().unwrap();
    let capture = dir.path().join("c.walcap");
    let capture = capture.to_str().unwrap();
    let stream = ["--slot", "s", "--publication", "p"];
    for bad in ["port=abc", "host=x bogus", "postgresql://[bad"] {
        let commands: [Vec<&str>; 8] = [
            [&["tail", bad][..], &stream].concat(),
            [&["record", bad, "--out", capture][..], &stream].concat(),
            vec!["slot", "list", bad],
            vec!["slot", "health", bad, "--slot", "s"],
            vec!["slot", "create", bad, "--slot", "s"],
            vec!["slot", "drop", bad, "--slot", "s"],
            vec!["basebackup", bad, "-D", backup],
            vec!["receivewal", bad, "-D", wal],
        ];
        for args in commands {
            let run = walstream(&args, b"");
            assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
            assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        }
    }
}

#[test]
fn every_help_lists_the_exit_codes() {
    let commands: [&[&str]; 12] = [
        &[],
        &["tail"],
        &["record"],
        &["decode"],
        &["demo"],
        &["slot"],
        &["slot", "list"],
        &["slot", "create"],
        &["slot", "drop"],
        &["slot", "health"],
        &["basebackup"],
        &["receivewal"],
    ];
    for args in commands.iter().copied().chain([&["completions"][..]]) {
        let run = walstream(&[args, &["--help"]].concat(), b"");
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("Exit status:"),
            "{args:?}: {}",
            run.stdout
        );
    }
    let tail = walstream(&["tail", "--help"], b"");
    for want in [
        "-f, --file",
        "-F, --fsync-interval",
        "--no-loop",
        "--if-not-exists",
        "--failover",
    ] {
        assert!(tail.stdout.contains(want), "{want}: {}", tail.stdout);
    }
}

#[test]
fn if_not_exists_needs_create_slot() {
    let run = walstream(
        &[
            "tail",
            "h",
            "--slot",
            "s",
            "--publication",
            "p",
            "--if-not-exists",
        ],
        b"",
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--create-slot"), "{}", run.stderr);
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let run = walstream(&["completions", shell], b"");
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        for want in ["walstream", "tail", "--publication", "--fsync-interval"] {
            assert!(run.stdout.contains(want), "{shell} {want}: {}", run.stdout);
        }
    }
    let run = walstream(&["completions", "powerpoint"], b"");
    assert_eq!(run.code, 2, "{}", run.stderr);
}
