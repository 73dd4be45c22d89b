//! Unit tests of `combine`: synthetic backups in a temporary directory.

use super::*;

fn block(fill: u8) -> Vec<u8> {
    vec![fill; BLCKSZ as usize]
}

/// An `INCREMENTAL.` file as the server writes it: `blocks` are (number, fill byte).
fn incremental(truncation: u32, blocks: &[(u32, u8)]) -> Vec<u8> {
    let words = [INCREMENTAL_MAGIC, blocks.len() as u32, truncation];
    let numbers = blocks.iter().map(|&(b, _)| b);
    let mut out: Vec<u8> = words
        .into_iter()
        .chain(numbers)
        .flat_map(u32::to_ne_bytes)
        .collect();
    if !blocks.is_empty() {
        out.resize(out.len().next_multiple_of(BLCKSZ as usize), 0);
    }
    out.extend(blocks.iter().flat_map(|&(_, fill)| block(fill)));
    out
}

/// A backup directory `name` under `root`: `pg_control` with `sysid`, a `backup_label`
/// starting at `start` (incremental from `from`), and `files`.
fn backup(
    root: &Path,
    name: &str,
    sysid: u64,
    start: &str,
    from: Option<&str>,
    files: &[(&str, Vec<u8>)],
) -> PathBuf {
    let dir = root.join(name);
    let mut control = sysid.to_ne_bytes().to_vec();
    control.extend(1700u32.to_ne_bytes());
    control.resize(BLCKSZ as usize, 0);
    let mut label = format!(
        "START WAL LOCATION: {start} (file 000000010000000000000002)\nCHECKPOINT LOCATION: \
         {start}\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nLABEL: {name}\nSTART TIMELINE: 1\n"
    );
    if let Some(from) = from {
        label += &format!("INCREMENTAL FROM LSN: {from}\nINCREMENTAL FROM TLI: 1\n");
    }
    let fixed = [
        ("global/pg_control", control),
        ("backup_label", label.into_bytes()),
    ];
    for (path, bytes) in fixed.iter().chain(files) {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    dir
}

fn blocks(fills: &[u8]) -> Vec<u8> {
    fills.iter().flat_map(|&f| block(f)).collect()
}

/// A full backup and an incremental one whose `base/5/16384` is `file`.
fn pair(root: &Path, file: Vec<u8>) -> [PathBuf; 2] {
    let full = backup(
        root,
        "full",
        7,
        "0/2000028",
        None,
        &[("base/5/16384", blocks(b"AB"))],
    );
    let files = [("base/5/INCREMENTAL.16384", file)];
    [
        full,
        backup(root, "incr", 7, "0/4000028", Some("0/2000028"), &files),
    ]
}

#[test]
fn each_block_comes_from_the_newest_backup_that_has_it() {
    let root = tempfile::tempdir().unwrap();
    let full = backup(
        root.path(),
        "full",
        7,
        "0/2000028",
        None,
        &[
            ("base/5/16384", blocks(b"ABCD")),
            ("base/5/16385", blocks(b"EE")),
            ("base/5/16399", blocks(b"Z")), // dropped before the incremental backups
            ("global/1262", blocks(b"G")),
        ],
    );
    let incr1 = backup(
        root.path(),
        "incr1",
        7,
        "0/4000028",
        Some("0/2000028"),
        &[
            ("base/5/INCREMENTAL.16384", incremental(4, &[(2, b'P')])),
            ("base/5/INCREMENTAL.16385", incremental(2, &[])),
            ("base/5/16386", blocks(b"QRS")),
            ("global/1262", blocks(b"H")),
        ],
    );
    let incr2 = backup(
        root.path(),
        "incr2",
        7,
        "0/6000028",
        Some("0/4000028"),
        &[
            // Truncated to 3 blocks, then extended: block 3 no backup has, block 4 is new.
            (
                "base/5/INCREMENTAL.16384",
                incremental(3, &[(1, b'X'), (4, b'Y')]),
            ),
            ("base/5/INCREMENTAL.16385", incremental(2, &[])),
            ("base/5/INCREMENTAL.16386", incremental(1, &[])),
            ("global/INCREMENTAL.1262", incremental(1, &[])),
            ("INCREMENTAL.conf", b"not a relation".to_vec()),
            ("backup_manifest", b"{}".to_vec()),
        ],
    );
    #[cfg(unix)]
    {
        // The newest backup's group access is the output's.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&incr2, fs::Permissions::from_mode(0o750)).unwrap();
    }
    let out = root.path().join("out");
    let summary = combine(&[&full, &incr1, &incr2], &out).unwrap();
    let read = |p: &str| fs::read(out.join(p)).unwrap();
    assert_eq!(
        read("base/5/16384"),
        [blocks(b"AXP"), vec![0; 8192], block(b'Y')].concat()
    );
    assert_eq!(
        read("base/5/16385"),
        blocks(b"EE"),
        "whole from the full backup"
    );
    assert_eq!(
        read("base/5/16386"),
        block(b'Q'),
        "truncated to its first block"
    );
    assert_eq!(read("global/1262"), block(b'H'));
    assert_eq!(
        read("INCREMENTAL.conf"),
        b"not a relation",
        "outside relation directories"
    );
    assert!(!out.join("base/5/16399").exists() && !out.join("backup_manifest").exists());
    let label = String::from_utf8(read("backup_label")).unwrap();
    assert!(
        label.starts_with("START WAL LOCATION: 0/6000028 "),
        "{label}"
    );
    assert!(
        label.ends_with("START TIMELINE: 1\n") && !label.contains("INCREMENTAL"),
        "{label}"
    );
    assert_eq!(
        (summary.system_identifier, summary.start_lsn),
        (7, "0/6000028".parse().unwrap())
    );
    assert_eq!((summary.files_reconstructed, summary.files_copied), (4, 2));
    assert_eq!((summary.blocks_written, summary.blocks_zeroed), (5, 1));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            (mode(&out), mode(&out.join("base/5/16384"))),
            (0o750, 0o640)
        );
    }
}

#[test]
fn a_malformed_incremental_file_is_refused_and_nothing_is_left() {
    let mut short = incremental(2, &[(0, b'a'), (1, b'b')]);
    short.truncate(short.len() - 1);
    let words = |w: &[u32]| w.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
    let cases = [
        ("bad magic", words(&[0xd3ae_1f0e, 0, 0])),
        (
            "a block count far beyond a segment",
            words(&[INCREMENTAL_MAGIC, u32::MAX, 0]),
        ),
        (
            "a block count of a segment and one",
            words(&[INCREMENTAL_MAGIC, RELSEG_SIZE + 1, 0]),
        ),
        (
            "a truncation length beyond",
            words(&[INCREMENTAL_MAGIC, 0, RELSEG_SIZE + 1]),
        ),
        (
            "a block number beyond",
            words(&[INCREMENTAL_MAGIC, 1, 0, RELSEG_SIZE]),
        ),
        ("block numbers cut", words(&[INCREMENTAL_MAGIC, 2, 0, 1])),
        ("a header cut", vec![0x0d, 0x1f]),
        ("a block cut", short),
    ];
    for (what, file) in cases {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let err = combine(&pair(root.path(), file), &out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BackupInvalid, "{what}: {err}");
        assert!(
            err.to_string().contains("INCREMENTAL.16384"),
            "{what}: {err}"
        );
        assert!(!out.exists(), "{what}: the output is removed");
    }
    let header = words(&[INCREMENTAL_MAGIC, RELSEG_SIZE, RELSEG_SIZE]);
    let err = IncrementalHeader::read(&mut &header[..], Path::new("x"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("block numbers"), "{err}");
}

#[test]
fn a_broken_chain_is_refused_before_anything_is_written() {
    let file = || incremental(2, &[(0, b'a')]);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let full = backup(
        r,
        "full",
        7,
        "0/2000028",
        None,
        &[("base/5/16384", blocks(b"AB"))],
    );
    let incr = |name, sysid, from: Option<&str>, rel: &str| {
        backup(r, name, sysid, "0/4000028", from, &[(rel, file())])
    };
    let cases = [
        (
            "another start",
            vec![
                full.clone(),
                incr("i1", 7, Some("0/3000028"), "base/5/INCREMENTAL.16384"),
            ],
        ),
        (
            "another cluster",
            vec![
                full.clone(),
                incr("i2", 8, Some("0/2000028"), "base/5/INCREMENTAL.16384"),
            ],
        ),
        (
            "incremental first",
            vec![incr("i3", 7, Some("0/2000028"), "base/5/INCREMENTAL.16384")],
        ),
        (
            "two full backups",
            vec![full.clone(), incr("i4", 7, None, "base/5/16384")],
        ),
        (
            "a file missing",
            vec![
                full.clone(),
                incr("i5", 7, Some("0/2000028"), "base/5/INCREMENTAL.16390"),
            ],
        ),
    ];
    for (what, chain) in cases {
        let out = r.join("out");
        let err = combine(&chain, &out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BackupChain, "{what}: {err}");
        assert!(!out.exists(), "{what}: the output is removed");
    }
    // An empty output directory stays, emptied again; one with files is not touched.
    let empty = r.join("empty");
    fs::create_dir(&empty).unwrap();
    combine(
        &[
            &full,
            &incr("i6", 7, Some("0/2000028"), "base/5/INCREMENTAL.16390"),
        ],
        &empty,
    )
    .unwrap_err();
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
    fs::write(empty.join("keep"), b"x").unwrap();
    assert_eq!(
        combine(&[&full], &empty).unwrap_err().kind(),
        ErrorKind::Config
    );
    assert_eq!(fs::read(empty.join("keep")).unwrap(), b"x");
    assert_eq!(
        combine(&[&full], &full.join("out")).unwrap_err().kind(),
        ErrorKind::Config
    );
    assert!(!full.join("out").exists());
    assert_eq!(
        combine(&[] as &[&Path], &r.join("none"))
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
}

#[test]
fn backup_labels_are_read_as_pg_combinebackup_reads_them() {
    let parse = |text: &str| Label::parse(text.as_bytes(), Path::new("backup_label"));
    let good = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 2\n";
    let label = parse(good).unwrap();
    assert_eq!(
        (label.start_lsn, label.start_tli, label.incremental_from),
        ("0/2000028".parse().unwrap(), 2, None)
    );
    let from = parse(&format!(
        "{good}INCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: 1\n"
    ))
    .unwrap();
    assert_eq!(
        from.incremental_from,
        Some(("0/1000028".parse().unwrap(), 1))
    );
    for bad in [
        "START TIMELINE: 1\n",
        "START WAL LOCATION: 0/2000028 \n",
        "START WAL LOCATION: 0/2000028\nSTART TIMELINE: 1\n",
        "START WAL LOCATION: 0/2000028 x\nSTART TIMELINE: 0\n",
        "START WAL LOCATION: 0/2000028 x\nSTART TIMELINE: 1",
        &format!("{good}INCREMENTAL FROM LSN: 0/1000028\n"),
        &format!("{good}INCREMENTAL FROM TLI: 1\n"),
        &format!("{good}INCREMENTAL FROM LSN: 0/1000028 \nINCREMENTAL FROM TLI: 1\n"),
    ] {
        assert_eq!(
            parse(bad).err().map(|e| e.kind()),
            Some(ErrorKind::BackupInvalid),
            "{bad:?}"
        );
    }
}

#[test]
fn in_place_tablespaces_are_combined_and_linked_ones_refused() {
    let root = tempfile::tempdir().unwrap();
    let rel = "pg_tblspc/16400/PG_17_202406281/5/16384";
    let full = backup(
        root.path(),
        "full",
        7,
        "0/2000028",
        None,
        &[(rel, blocks(b"AB"))],
    );
    let incremental_rel = rel.replace("16384", "INCREMENTAL.16384");
    let files = [(incremental_rel.as_str(), incremental(2, &[(1, b'X')]))];
    let incr = backup(
        root.path(),
        "incr",
        7,
        "0/4000028",
        Some("0/2000028"),
        &files,
    );
    let out = root.path().join("out");
    combine(&[&full, &incr], &out).unwrap();
    assert_eq!(fs::read(out.join(rel)).unwrap(), blocks(b"AX"));

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.path(), incr.join("pg_tblspc/16401")).unwrap();
        let out = root.path().join("out2");
        let err = combine(&[&full, &incr], &out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("16401"), "{err}");
        assert!(!out.exists());
    }
}
