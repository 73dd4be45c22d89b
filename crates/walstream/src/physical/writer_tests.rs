//! The writer against a temporary directory: names, sizes, completion, resends, the error
//! paths, and where it resumes.

use super::*;

const MB: u64 = 1 << 20;

fn size() -> WalSegmentSize {
    WalSegmentSize::new(MB).unwrap()
}

/// Deterministic bytes for the WAL at `start`: each byte is a function of its position, so
/// any misplaced byte shows.
fn wal(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((start + i) % 251) as u8).collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn segments_are_named_completed_and_renamed_as_pg_receivewal_does() {
    let dir = tempfile::tempdir().unwrap();
    let start = 3 * MB + 100;
    let mut w = WalWriter::open(dir.path(), size(), 1, Lsn::new(start)).unwrap();
    assert!(names(dir.path()).is_empty());
    // Across the end of segment 3 into segment 4, in uneven pieces.
    let total = (MB + 4000) as usize;
    let data = wal(start, total);
    let mut at = 0;
    for piece in data.chunks(300_001) {
        w.write(1, Lsn::new(start + at as u64), piece).unwrap();
        at += piece.len();
    }
    assert_eq!(
        names(dir.path()),
        [
            "000000010000000000000003",
            "000000010000000000000004.partial"
        ]
    );
    let done = fs::read(dir.path().join("000000010000000000000003")).unwrap();
    assert_eq!(done.len() as u64, MB);
    assert!(
        done[..100].iter().all(|&b| b == 0),
        "before the start: zeros"
    );
    assert_eq!(&done[100..], &data[..(MB - 100) as usize]);
    assert_eq!(
        w.flushed(),
        Lsn::new(4 * MB),
        "a completed segment is durable"
    );
    assert_eq!(w.flush().unwrap(), Lsn::new(start + total as u64));
    let partial = fs::read(dir.path().join("000000010000000000000004.partial")).unwrap();
    assert_eq!(partial.len() as u64, MB, "pre-sized");
    let tail = &data[(MB - 100) as usize..];
    assert_eq!(&partial[..tail.len()], tail);
    assert!(partial[tail.len()..].iter().all(|&b| b == 0));

    // A resend from inside the segment in progress is idempotent.
    let resend_at = 4 * MB + 10;
    w.write(1, Lsn::new(resend_at), &wal(resend_at, 1000))
        .unwrap();
    assert_eq!(w.position(), Lsn::new(start + total as u64));
    assert_eq!(
        fs::read(dir.path().join("000000010000000000000004.partial")).unwrap(),
        partial
    );
    assert_eq!(
        WalWriter::resume_position(dir.path(), size()).unwrap(),
        Some(ResumePosition {
            timeline: 1,
            lsn: Lsn::new(4 * MB)
        })
    );
    // Finish segment 4: the directory now resumes after it.
    let pos = w.position().get();
    w.write(1, Lsn::new(pos), &wal(pos, (5 * MB - pos) as usize))
        .unwrap();
    assert_eq!(
        WalWriter::resume_position(dir.path(), size()).unwrap(),
        Some(ResumePosition {
            timeline: 1,
            lsn: Lsn::new(5 * MB)
        })
    );
}

#[test]
fn bad_writes_are_typed_errors_that_leave_the_directory_alone() {
    let dir = tempfile::tempdir().unwrap();
    let start = 2 * MB;
    let mut w = WalWriter::open(dir.path(), size(), 2, Lsn::new(start)).unwrap();
    w.write(2, Lsn::new(start), &wal(start, (MB + 50) as usize))
        .unwrap();
    let before = names(dir.path());
    let pos = w.position();
    // A gap.
    let e = w.write(2, Lsn::new(pos.get() + 1), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WalFile);
    assert!(e.to_string().contains("gap"), "{e}");
    assert_eq!(e.lsn(), Some(Lsn::new(pos.get() + 1)));
    // Before the segment in progress (segment 2 is complete).
    let e = w.write(2, Lsn::new(3 * MB - 1), b"xy").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WalFile);
    assert!(
        e.to_string().contains("before the segment in progress"),
        "{e}"
    );
    // A timeline going back.
    let e = w.write(1, pos, b"x").unwrap_err();
    assert!(e.to_string().contains("timelines only go forward"), "{e}");
    // A new timeline that does not continue the old one.
    let e = w.write(3, Lsn::new(pos.get() - 1), b"xy").unwrap_err();
    assert!(e.to_string().contains("must continue"), "{e}");
    assert_eq!(names(dir.path()), before);
    assert_eq!(w.position(), pos);
}

#[test]
fn a_new_timeline_leaves_the_old_segment_partial_and_stores_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = WalWriter::open(dir.path(), size(), 1, Lsn::new(MB)).unwrap();
    w.write(1, Lsn::new(MB), &wal(MB, 5000)).unwrap();
    let at = Lsn::new(MB + 5000);
    w.write_history(2, b"1\t0/101388\tno recovery target specified\n")
        .unwrap();
    w.write(2, at, &wal(at.get(), 100)).unwrap();
    assert_eq!(w.timeline(), 2);
    assert_eq!(
        names(dir.path()),
        [
            "000000010000000000000001.partial",
            "00000002.history",
            "000000020000000000000001.partial",
        ]
    );
    assert_eq!(
        fs::read(dir.path().join("00000002.history")).unwrap(),
        b"1\t0/101388\tno recovery target specified\n"
    );
    // Same segment number: the higher timeline wins.
    assert_eq!(
        WalWriter::resume_position(dir.path(), size()).unwrap(),
        Some(ResumePosition {
            timeline: 2,
            lsn: Lsn::new(MB)
        })
    );
    assert_eq!(w.close().unwrap(), Lsn::new(at.get() + 100));
}

#[test]
fn files_of_the_wrong_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        WalWriter::resume_position(dir.path(), size()).unwrap(),
        None
    );
    // Not WAL file names: ignored.
    fs::write(dir.path().join("00000002.history"), b"").unwrap();
    fs::write(dir.path().join("README"), b"").unwrap();
    assert_eq!(
        WalWriter::resume_position(dir.path(), size()).unwrap(),
        None
    );
    fs::write(
        dir.path().join("000000010000000000000007.partial"),
        [0u8; 10],
    )
    .unwrap();
    let e = WalWriter::resume_position(dir.path(), size()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WalFile);
    assert!(e.to_string().contains("has 10 bytes"), "{e}");
    let mut w = WalWriter::open(dir.path(), size(), 1, Lsn::new(7 * MB)).unwrap();
    let e = w.write(1, Lsn::new(7 * MB), b"x").unwrap_err();
    assert!(
        e.to_string().contains("neither 0 nor the segment size"),
        "{e}"
    );
    // A complete segment is never written again.
    fs::remove_file(dir.path().join("000000010000000000000007.partial")).unwrap();
    fs::write(
        dir.path().join("000000010000000000000008"),
        vec![0u8; MB as usize],
    )
    .unwrap();
    let mut w = WalWriter::open(dir.path(), size(), 1, Lsn::new(8 * MB)).unwrap();
    let e = w.write(1, Lsn::new(8 * MB), b"x").unwrap_err();
    assert!(e.to_string().contains("already complete"), "{e}");
    assert_eq!(e.lsn(), Some(Lsn::new(8 * MB)));
    // Not a directory.
    let file = dir.path().join("README");
    let e = WalWriter::open(&file, size(), 1, Lsn::ZERO).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WalFile);
}
