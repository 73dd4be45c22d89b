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
