//! The password file (`~/.pgpass` or `passfile`/`PGPASSFILE`), read as libpq reads it.
//!
//! Each line is `hostname:port:database:username:password`; `*` in the first four fields
//! matches anything, `\` escapes `:` and `\`, lines starting with `#` are comments, and the
//! first matching line wins. A Unix-socket connection matches the host `localhost`. libpq
//! ignores a file that others can read or write; so does this crate.

use std::path::Path;

/// The password for this connection from the file at `path`, if the file exists, is private
/// and has a matching line.
pub(crate) fn lookup(
    path: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) or less"
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    find(&text, host, &port.to_string(), dbname, user)
}

/// The first matching line's password in `text`.
pub(crate) fn find(text: &str, host: &str, port: &str, dbname: &str, user: &str) -> Option<String> {
    let wanted = [host, port, dbname, user];
    text.lines().find_map(|line| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') || line.is_empty() {
            return None;
        }
        let fields = split(line);
        let [h, p, d, u, password] = <[String; 5]>::try_from(fields).ok()?;
        let matches = [h, p, d, u]
            .iter()
            .zip(wanted)
            .all(|(field, want)| field == "*" || field == want);
        matches.then_some(password)
    })
}

/// Splits at unescaped `:` into at most five fields, undoing `\` escapes (the password field
/// takes the rest of the line, colons included, as in libpq).
fn split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == ':' && fields.len() < 5 {
            fields.push(String::new());
            continue;
        }
        let c = if c == '\\' { chars.next() } else { Some(c) };
        if let (Some(current), Some(c)) = (fields.last_mut(), c) {
            current.push(c);
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_escapes_and_first_match() {
        let text = "# comment\n\
                    other:5432:*:*:nope\n\
                    db\\:1:*:my\\\\db:alice:pa\\:ss\n\
                    *:5432:*:alice:fallback:with:colons\n";
        assert_eq!(
            find(text, "db:1", "9", "my\\db", "alice").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            find(text, "x", "5432", "any", "alice").as_deref(),
            Some("fallback:with:colons")
        );
        assert_eq!(find(text, "x", "5433", "any", "alice"), None);
        assert_eq!(
            find(text, "other", "5432", "d", "bob").as_deref(),
            Some("nope")
        );
        assert_eq!(find("short:line", "short", "line", "", ""), None);
    }

    #[test]
    fn a_readable_file_is_ignored() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("walconn-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or(());
        let path = dir.join("pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").unwrap_or(());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap_or(());
        assert_eq!(lookup(&path, "h", 1, "d", "u"), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap_or(());
        assert_eq!(lookup(&path, "h", 1, "d", "u").as_deref(), Some("secret"));
        std::fs::remove_dir_all(&dir).unwrap_or(());
    }
}
