#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

use super::*;

/// An archive of a directory, a file of `len` bytes and a link, with its end marker.
fn archive(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(header(
        b"base",
        EntryKind::Directory,
        0,
        0o700,
        1_700_000_000,
        b"",
    ));
    out.extend(header(
        b"base/1",
        EntryKind::File,
        len as u64,
        0o600,
        1_700_000_001,
        b"",
    ));
    out.extend((0..len).map(|i| (i % 251) as u8));
    out.resize(out.len() + padding(len as u64), 0);
    out.extend(header(
        b"pg_tblspc/16384",
        EntryKind::Symlink,
        0,
        0o777,
        0,
        b"/ts",
    ));
    out.extend([0u8; 2 * BLOCK]);
    out
}

/// Reads `bytes` pushed in chunks of `chunk` bytes: the events, with data joined per file.
fn read(bytes: &[u8], chunk: usize) -> Result<Vec<TarEvent>, TarError> {
    let mut tar = TarReader::new("base.tar");
    let mut events = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        tar.push(Bytes::copy_from_slice(c));
        while let Some(e) = tar.next_event()? {
            match (events.last_mut(), e) {
                (Some(TarEvent::Data(prev)), TarEvent::Data(d)) => {
                    *prev = Bytes::from([&prev[..], &d[..]].concat());
                }
                (_, e) => events.push(e),
            }
        }
    }
    tar.finish()?;
    Ok(events)
}

#[test]
fn reads_files_directories_links_in_any_chunking() {
    let bytes = archive(1000);
    for chunk in [1, 7, 511, 512, 513, 4096, bytes.len()] {
        let events = read(&bytes, chunk).unwrap();
        assert_eq!(events.len(), 8, "{events:?}");
        let TarEvent::Entry(dir) = &events[0] else {
            panic!()
        };
        assert_eq!(dir.path, Path::new("base"));
        assert_eq!(
            (dir.kind, dir.mode, dir.mtime),
            (EntryKind::Directory, 0o700, 1_700_000_000)
        );
        let TarEvent::Entry(file) = &events[2] else {
            panic!()
        };
        assert_eq!((file.kind, file.size), (EntryKind::File, 1000));
        let TarEvent::Data(data) = &events[3] else {
            panic!()
        };
        assert_eq!(data.len(), 1000);
        assert_eq!(data[250], 250);
        assert_eq!(events[4], TarEvent::EntryEnd);
        let TarEvent::Entry(link) = &events[5] else {
            panic!()
        };
        assert_eq!(link.link.as_deref(), Some(Path::new("/ts")));
        assert_eq!(events[7], TarEvent::End);
    }
}

#[test]
fn data_is_a_slice_of_the_pushed_chunk() {
    let bytes = Bytes::from(archive(4096));
    let mut tar = TarReader::new("base.tar");
    tar.push(bytes.clone());
    let mut found = false;
    while let Some(e) = tar.next_event().unwrap() {
        if let TarEvent::Data(d) = e {
            let start = d.as_ptr() as usize - bytes.as_ptr() as usize;
            assert_eq!(
                start,
                2 * BLOCK,
                "not copied: points into the pushed buffer"
            );
            found = true;
        }
    }
    assert!(found);
}

#[test]
fn truncation_anywhere_is_typed_with_the_member() {
    let bytes = archive(1000);
    for cut in 0..bytes.len() - 2 * BLOCK {
        let err = read(&bytes[..cut], 97).unwrap_err();
        assert_eq!(err.archive(), "base.tar");
        assert_eq!(err.offset(), cut as u64, "cut at {cut}");
        let TarErrorKind::Truncated { member } = err.kind() else {
            panic!("cut at {cut}: {err}")
        };
        // Inside the file's data or padding the member is named.
        if (2 * BLOCK..4 * BLOCK).contains(&cut) {
            assert_eq!(member.as_deref(), Some(Path::new("base/1")), "cut at {cut}");
        }
    }
}

#[test]
fn a_flipped_header_byte_fails_the_checksum() {
    let mut bytes = archive(10);
    bytes[BLOCK + 3] ^= 1;
    let err = read(&bytes, 512).unwrap_err();
    assert!(
        matches!(err.kind(), TarErrorKind::BadChecksum { .. }),
        "{err}"
    );
    assert_eq!(err.offset(), BLOCK as u64 + 148);
}

#[test]
fn unsafe_paths_are_refused() {
    for name in [&b"../etc/passwd"[..], b"/etc/passwd", b"a/../../b", b"./"] {
        let mut bytes = header(name, EntryKind::File, 0, 0o600, 0, b"").to_vec();
        bytes.extend([0u8; 2 * BLOCK]);
        let err = read(&bytes, 512).unwrap_err();
        assert!(
            matches!(err.kind(), TarErrorKind::UnsafePath { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("would leave the directory"),
            "{err}"
        );
    }
}

#[test]
fn bad_numbers_types_and_trailing_data() {
    let mut h = header(b"f", EntryKind::File, 0, 0o600, 0, b"");
    h[124..136].copy_from_slice(b"12x45670000\0");
    // Re-checksum so the size is what fails.
    h[148..156].copy_from_slice(b"        ");
    let sum = checksum(&h);
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let err = read(&h, 512).unwrap_err();
    assert_eq!(err.kind(), &TarErrorKind::BadNumber { field: "size" });

    let mut h = header(b"f", EntryKind::File, 0, 0o600, 0, b"");
    h[156] = b'1';
    h[148..156].copy_from_slice(b"        ");
    let sum = checksum(&h);
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let err = read(&h, 512).unwrap_err();
    assert_eq!(
        err.kind(),
        &TarErrorKind::UnsupportedType { typeflag: b'1' }
    );

    let mut bytes = archive(0);
    bytes.push(1);
    let err = read(&bytes, 512).unwrap_err();
    assert_eq!(err.kind(), &TarErrorKind::TrailingData);
}

#[test]
fn base_256_sizes_are_read_without_allocating_them() {
    // A header claiming 2^40 bytes: the reader hands out what arrives and reports the cut.
    let size = 1u64 << 40;
    let mut bytes = header(b"big", EntryKind::File, size, 0o600, 0, b"").to_vec();
    assert_eq!(bytes[124], 0x80);
    bytes.extend([7u8; 100]);
    let mut tar = TarReader::new("base.tar");
    tar.push(Bytes::from(bytes));
    let TarEvent::Entry(e) = tar.next_event().unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(e.size, size);
    assert_eq!(
        tar.next_event().unwrap(),
        Some(TarEvent::Data(Bytes::from(vec![7u8; 100])))
    );
    assert_eq!(tar.next_event().unwrap(), None);
    let err = tar.finish().unwrap_err();
    assert_eq!(
        err.kind(),
        &TarErrorKind::Truncated {
            member: Some(PathBuf::from("big"))
        }
    );
}

#[test]
fn octal_fields_as_postgres_writes_them() {
    assert_eq!(number(b"0000644\0"), Some(0o644));
    assert_eq!(number(b"  644 \0"), Some(0o644));
    assert_eq!(number(b"\0\0\0"), None);
    assert_eq!(number(b"9"), None);
}
