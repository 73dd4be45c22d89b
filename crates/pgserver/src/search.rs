//! Finding PostgreSQL server binaries on this machine (the search order is in the crate docs).

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, ServerUser};

/// The tools a server directory must hold: the server, and what creates and runs a cluster.
const SERVER_TOOLS: [&str; 3] = ["postgres", "initdb", "pg_ctl"];

/// Where the Debian and Ubuntu packages put each major's `bin` directory.
const SYSTEM_DIR: &str = "/usr/lib/postgresql";

/// The places to look for server binaries, read from the environment once.
///
/// ```no_run
/// let found = walstream_pgserver::Search::from_env().find();
/// for install in &found {
///     println!("PostgreSQL {} in {} ({})", install.major(), install.bin_dir().display(),
///         install.source());
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Search {
    /// `$WALSTREAM_PG<N>_BIN`, by N ascending.
    major_dirs: Vec<(u32, PathBuf)>,
    /// `$WALSTREAM_PG_BIN`.
    extra_dir: Option<PathBuf>,
    /// The `cargo xtask pg install` caches, most specific first.
    caches: Vec<PathBuf>,
    /// The directories of `PATH`.
    path: Vec<PathBuf>,
    /// What `pg_config --bindir` printed.
    pg_config: Option<PathBuf>,
    /// The parent of the system packages' `<N>/bin` directories.
    system: PathBuf,
}

impl Search {
    /// The search of the crate docs: the `WALSTREAM_PG*` variables, the caches, `PATH`,
    /// `pg_config --bindir` (run now, if it is on `PATH`) and `/usr/lib/postgresql`.
    pub fn from_env() -> Self {
        let mut major_dirs: Vec<(u32, PathBuf)> = std::env::vars_os()
            .filter_map(|(name, value)| Some((major_variable(&name)?, PathBuf::from(value))))
            .collect();
        major_dirs.sort_by_key(|(major, _)| *major);
        Self {
            major_dirs,
            extra_dir: std::env::var_os("WALSTREAM_PG_BIN").map(PathBuf::from),
            caches: cache_dirs(),
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
            pg_config: pg_config_bindir(),
            system: PathBuf::from(SYSTEM_DIR),
        }
    }

    /// Every installation found, in search order, one per directory. This runs
    /// `postgres --version` once per directory that holds the server tools; it starts nothing.
    pub fn find(&self) -> Installations {
        self.find_with(|dir| major_of(dir).ok())
    }

    /// Where this search looks, in order, for messages: `$WALSTREAM_PG<N>_BIN, ...,
    /// /usr/lib/postgresql/<N>/bin`.
    pub fn places(&self) -> String {
        let mut places = vec![
            "$WALSTREAM_PG<N>_BIN".to_owned(),
            "$WALSTREAM_PG_BIN".to_owned(),
        ];
        places.extend(
            self.caches
                .iter()
                .map(|c| format!("{}/<N>/bin", c.display())),
        );
        places.push("PATH".to_owned());
        places.push("`pg_config --bindir`".to_owned());
        places.push(format!("{}/<N>/bin", self.system.display()));
        places.join(", ")
    }

    /// [`find`](Self::find) with the major version of a server directory asked of `probe`
    /// (`None`: not a usable server), so the order can be tested without running anything.
    fn find_with(&self, probe: impl Fn(&Path) -> Option<u32>) -> Installations {
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut list = Vec::new();
        for (source, dir) in self.candidates() {
            if !is_server_dir(&dir) {
                continue;
            }
            // The same directory is often reached twice (through PATH and pg_config, or a
            // directory of symlinks): it counts once, where it was first found.
            let Some(bin_dir) = real_bin_dir(&dir) else {
                continue;
            };
            if seen.contains(&bin_dir) {
                continue;
            }
            seen.push(bin_dir.clone());
            if let Some(major) = probe(&bin_dir) {
                list.push(Installation {
                    major,
                    bin_dir,
                    source,
                });
            }
        }
        Installations {
            list,
            places: self.places(),
        }
    }

    /// Every directory to look at, in search order, with where it came from.
    fn candidates(&self) -> Vec<(Source, PathBuf)> {
        let mut dirs: Vec<(Source, PathBuf)> = self
            .major_dirs
            .iter()
            .map(|(major, dir)| (Source::MajorVariable(*major), dir.clone()))
            .collect();
        dirs.extend(self.extra_dir.iter().map(|d| (Source::Variable, d.clone())));
        for cache in &self.caches {
            dirs.extend(subdirs(cache).map(|d| (Source::Cache, d.join("bin"))));
        }
        dirs.extend(self.path.iter().map(|d| (Source::Path, d.clone())));
        dirs.extend(self.pg_config.iter().map(|d| (Source::PgConfig, d.clone())));
        dirs.extend(subdirs(&self.system).map(|d| (Source::System, d.join("bin"))));
        dirs
    }
}

/// The installations a [`Search`] found, in search order, and where it looked.
#[derive(Debug, Clone)]
pub struct Installations {
    list: Vec<Installation>,
    /// [`Search::places`], or empty for a directory the user named.
    places: String,
}

impl Installations {
    /// Just `installation`, a directory the user named (for example with a `--bin-dir`
    /// option): the pick and its error messages then speak of it alone.
    pub fn one(installation: Installation) -> Self {
        Self {
            list: vec![installation],
            places: String::new(),
        }
    }

    /// The installations in search order.
    pub fn as_slice(&self) -> &[Installation] {
        &self.list
    }

    /// The installations in search order.
    pub fn iter(&self) -> std::slice::Iter<'_, Installation> {
        self.list.iter()
    }

    /// Where the search looked (see [`Search::places`]); empty for [`one`](Self::one).
    pub fn places(&self) -> &str {
        &self.places
    }

    /// The first installation of PostgreSQL `major` in search order, or an error that says
    /// where the search looked.
    pub fn major(&self, major: u32) -> Result<&Installation, Error> {
        self.list.iter().find(|i| i.major == major).ok_or_else(|| {
            Error::new(format!(
                "PostgreSQL {major} server binaries (postgres, initdb, pg_ctl) not found{}",
                self.looked()
            ))
        })
    }

    /// The newest installation of PostgreSQL `min_major` or later whose binaries `user` can
    /// run (as root, the `postgres` user must be able to reach the directory); of one major,
    /// the first in search order. The error lists what was found and why it was passed over.
    pub fn newest(&self, min_major: u32, user: ServerUser) -> Result<&Installation, Error> {
        let mut by_age: Vec<&Installation> = self.list.iter().collect();
        // A stable sort: of one major, the first found stays first.
        by_age.sort_by_key(|i| std::cmp::Reverse(i.major));
        let mut passed_over = Vec::new();
        for install in by_age {
            if install.major < min_major {
                passed_over.push(format!(
                    "{} (PostgreSQL {}: older than {min_major})",
                    install.bin_dir.display(),
                    install.major
                ));
            } else if !install.runs_as(user) {
                passed_over.push(format!(
                    "{} ({} cannot run it: give others search permission on its parent \
                     directories)",
                    install.bin_dir.display(),
                    user.describe()
                ));
            } else {
                return Ok(install);
            }
        }
        let looked = self.looked();
        Err(Error::new(if passed_over.is_empty() {
            format!("no PostgreSQL server binaries (postgres, initdb, pg_ctl) found{looked}")
        } else {
            format!(
                "no usable PostgreSQL server binaries found{looked}: {}",
                passed_over.join(", ")
            )
        }))
    }

    /// `" in <places>"`, or nothing for a directory the user named.
    fn looked(&self) -> String {
        if self.places.is_empty() {
            String::new()
        } else {
            format!(" in {}", self.places)
        }
    }
}

impl<'a> IntoIterator for &'a Installations {
    type Item = &'a Installation;
    type IntoIter = std::slice::Iter<'a, Installation>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

/// One directory of server binaries and its major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    major: u32,
    bin_dir: PathBuf,
    source: Source,
}

impl Installation {
    /// The server binaries in `bin_dir`, a directory the user named: an error when it does not
    /// hold `postgres`, `initdb` and `pg_ctl`, or `postgres --version` names no version.
    pub fn at(bin_dir: &Path) -> Result<Self, Error> {
        if !is_server_dir(bin_dir) {
            return Err(Error::new(format!(
                "{} does not hold postgres, initdb and pg_ctl",
                bin_dir.display()
            )));
        }
        let canonical = real_bin_dir(bin_dir)
            .ok_or_else(|| Error::new(format!("{}: cannot resolve it", bin_dir.display())))?;
        Ok(Self {
            major: major_of(&canonical)?,
            bin_dir: canonical,
            source: Source::Given,
        })
    }

    /// The major version, for example 17.
    pub fn major(&self) -> u32 {
        self.major
    }

    /// The `bin` directory where `postgres` really is (absolute, symlinks resolved: a
    /// directory of links such as `/usr/local/bin` gives the directory they point to).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Where the search found it.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The path of one of its programs, for example `tool("pg_ctl")`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Whether `user` can run these binaries: always for the current user (the search ran
    /// `postgres --version`); for the `postgres` user, whether it can run it too, which fails
    /// when a parent directory (such as `/root`) does not let others through.
    pub fn runs_as(&self, user: ServerUser) -> bool {
        if !user.is_other_user() {
            return true;
        }
        let mut cmd = Command::new(self.tool("postgres"));
        cmd.arg("--version")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        user.apply(&mut cmd).status().is_ok_and(|s| s.success())
    }
}

/// Where an [`Installation`] was found: a step of the search order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// `$WALSTREAM_PG<N>_BIN`, with its N.
    MajorVariable(u32),
    /// `$WALSTREAM_PG_BIN`.
    Variable,
    /// A `cargo xtask pg install` cache (see [`cache_dirs`]).
    Cache,
    /// A directory of `PATH`.
    Path,
    /// `pg_config --bindir`.
    PgConfig,
    /// `/usr/lib/postgresql/<N>/bin`.
    System,
    /// Named by the user ([`Installation::at`]).
    Given,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::MajorVariable(n) => write!(f, "$WALSTREAM_PG{n}_BIN"),
            Source::Variable => f.write_str("$WALSTREAM_PG_BIN"),
            Source::Cache => f.write_str("the `cargo xtask pg install` cache"),
            Source::Path => f.write_str("PATH"),
            Source::PgConfig => f.write_str("`pg_config --bindir`"),
            Source::System => f.write_str("the system packages"),
            Source::Given => f.write_str("given"),
        }
    }
}

/// The `cargo xtask pg install` caches that are searched (for `<cache>/<N>/bin`), most
/// specific first: `$WALSTREAM_PG_CACHE`, `$CARGO_TARGET_DIR/pg`, a `pg` directory in one of
/// the four directories above the running executable (a test binary lives in
/// `<target>/<profile>/deps/`, the `walstream` binary in `<target>/<profile>/`), and this
/// workspace's `target/pg`.
pub fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("WALSTREAM_PG_CACHE") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(d).join("pg"));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            let pg = dir.join("pg");
            if pg.is_dir() {
                dirs.push(pg);
            }
        }
    }
    // This crate sits at `<workspace>/crates/pgserver`.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(workspace) = manifest.parent().and_then(Path::parent) {
        dirs.push(workspace.join("target").join("pg"));
    }
    // One cache is often reached twice (through CARGO_TARGET_DIR and the executable's path).
    let mut unique: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let dir = dir.canonicalize().unwrap_or(dir);
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    unique
}

/// `N` of a variable named `WALSTREAM_PG<N>_BIN`.
fn major_variable(name: &OsString) -> Option<u32> {
    let digits = name
        .to_str()?
        .strip_prefix("WALSTREAM_PG")?
        .strip_suffix("_BIN")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What `pg_config --bindir` prints, if there is a `pg_config` on `PATH`.
fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The entries of `dir`, sorted (none if it cannot be read).
fn subdirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
}

/// Where the server in `dir` really lives: the directory of `postgres` with every symlink
/// resolved, when that directory holds the other tools too (links to one installation, as
/// Homebrew and some images put in `/usr/local/bin`), else `dir` itself, resolved.
fn real_bin_dir(dir: &Path) -> Option<PathBuf> {
    let real = dir
        .join("postgres")
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| is_server_dir(d));
    real.or_else(|| dir.canonicalize().ok())
}

fn is_server_dir(dir: &Path) -> bool {
    SERVER_TOOLS.iter().all(|t| dir.join(t).is_file())
}

/// Asks `<dir>/postgres --version` for its major version.
fn major_of(dir: &Path) -> Result<u32, Error> {
    let postgres = dir.join("postgres");
    let out = Command::new(&postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(format!("running {}: {e}", postgres.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_major(&text).ok_or_else(|| {
        Error::new(format!(
            "{} --version printed {:?} ({}); expected \"postgres (PostgreSQL) N.M\"",
            postgres.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })
}

/// The major version in what `postgres --version` prints: the leading digits of its first
/// word that starts with one ("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" is 15,
/// "postgres (PostgreSQL) 18beta1" is 18, "postgres (PostgreSQL) 9.6.24" is 9).
fn parse_major(version: &str) -> Option<u32> {
    let word = version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    word.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::make_temp_dir;

    /// A directory tree of fake server directories, removed at the end of the test. Each
    /// holds a `VERSION` file that the probe reads instead of running `postgres --version`
    /// (running a freshly written script races other test threads' forks: ETXTBSY).
    struct Tree(PathBuf);

    impl Tree {
        fn new() -> Self {
            Tree(make_temp_dir("pgserver-search-test").unwrap())
        }

        /// `<tree>/<rel>` holding postgres, initdb and pg_ctl of `major`.
        fn server(&self, rel: &str, major: u32) -> PathBuf {
            let dir = self.0.join(rel);
            fs::create_dir_all(&dir).unwrap();
            for tool in SERVER_TOOLS {
                fs::write(dir.join(tool), "").unwrap();
            }
            fs::write(dir.join("VERSION"), major.to_string()).unwrap();
            dir.canonicalize().unwrap()
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }

        fn empty_search(&self) -> Search {
            Search {
                major_dirs: Vec::new(),
                extra_dir: None,
                caches: Vec::new(),
                path: Vec::new(),
                pg_config: None,
                system: self.path("system"),
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn probe(dir: &Path) -> Option<u32> {
        fs::read_to_string(dir.join("VERSION")).ok()?.parse().ok()
    }

    fn found(search: &Search) -> Vec<(u32, PathBuf, Source)> {
        search
            .find_with(probe)
            .iter()
            .map(|i| (i.major, i.bin_dir.clone(), i.source))
            .collect()
    }

    #[test]
    fn every_step_of_the_search_in_order() {
        let tree = Tree::new();
        let var16 = tree.server("var16", 16);
        let extra = tree.server("extra", 17);
        let cache16 = tree.server("cache/16/bin", 16);
        let cache18 = tree.server("cache/18/bin", 18);
        let on_path = tree.server("on-path", 14);
        let pg_config = tree.server("pg-config", 13);
        let system15 = tree.server("system/15/bin", 15);
        let system12 = tree.server("system/12/bin", 12);
        let search = Search {
            major_dirs: vec![(16, var16.clone())],
            extra_dir: Some(extra.clone()),
            caches: vec![tree.path("cache"), tree.path("no-such-cache")],
            path: vec![tree.path("not-a-server"), on_path.clone()],
            pg_config: Some(pg_config.clone()),
            system: tree.path("system"),
        };
        assert_eq!(
            found(&search),
            vec![
                (16, var16, Source::MajorVariable(16)),
                (17, extra, Source::Variable),
                (16, cache16, Source::Cache),
                (18, cache18, Source::Cache),
                (14, on_path, Source::Path),
                (13, pg_config, Source::PgConfig),
                (12, system12, Source::System),
                (15, system15, Source::System),
            ]
        );
    }

    #[test]
    fn the_first_of_one_major_wins() {
        let tree = Tree::new();
        let cache = tree.server("cache/15/bin", 15);
        tree.server("system/15/bin", 15);
        let search = Search {
            caches: vec![tree.path("cache")],
            ..tree.empty_search()
        };
        let found = search.find_with(probe);
        assert_eq!(found.major(15).unwrap().bin_dir(), cache);
        assert_eq!(found.major(15).unwrap().source(), Source::Cache);
        let missing = found.major(16).unwrap_err().to_string();
        assert!(
            missing.starts_with(
                "PostgreSQL 16 server binaries (postgres, initdb, pg_ctl) not found in \
                 $WALSTREAM_PG<N>_BIN, $WALSTREAM_PG_BIN, "
            ),
            "{missing}"
        );
        assert!(
            missing.ends_with(&format!("{}/<N>/bin", tree.path("system").display())),
            "{missing}"
        );
    }

    #[test]
    fn a_directory_reached_twice_counts_once_where_first_found() {
        let tree = Tree::new();
        let system = tree.server("system/15/bin", 15);
        std::os::unix::fs::symlink(&system, tree.path("link")).unwrap();
        let search = Search {
            path: vec![tree.path("link"), system.clone()],
            pg_config: Some(system.clone()),
            ..tree.empty_search()
        };
        assert_eq!(found(&search), vec![(15, system, Source::Path)]);
    }

    #[test]
    fn a_directory_of_links_counts_as_the_directory_they_point_to() {
        let tree = Tree::new();
        let system = tree.server("system/15/bin", 15);
        let links = tree.path("usr-local-bin");
        fs::create_dir(&links).unwrap();
        for tool in SERVER_TOOLS {
            std::os::unix::fs::symlink(system.join(tool), links.join(tool)).unwrap();
        }
        let search = Search {
            path: vec![links],
            ..tree.empty_search()
        };
        assert_eq!(found(&search), vec![(15, system, Source::Path)]);
    }

    #[test]
    fn a_directory_without_every_tool_or_a_version_is_skipped() {
        let tree = Tree::new();
        let partial = tree.server("partial", 16);
        fs::remove_file(partial.join("initdb")).unwrap();
        let unversioned = tree.server("unversioned", 16);
        fs::remove_file(unversioned.join("VERSION")).unwrap();
        let search = Search {
            path: vec![partial, unversioned],
            ..tree.empty_search()
        };
        assert_eq!(found(&search), vec![]);
        let err = search
            .find_with(probe)
            .newest(10, ServerUser::current())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "no PostgreSQL server binaries (postgres, initdb, pg_ctl) found in \
                 $WALSTREAM_PG<N>_BIN"
            ),
            "{err}"
        );
    }

    #[test]
    fn newest_takes_the_newest_major_then_the_first_found() {
        let tree = Tree::new();
        tree.server("on-path", 15);
        let first17 = tree.server("cache/17/bin", 17);
        tree.server("system/17/bin", 17);
        tree.server("system/16/bin", 16);
        let search = Search {
            caches: vec![tree.path("cache")],
            path: vec![tree.path("on-path")],
            ..tree.empty_search()
        };
        let found = search.find_with(probe);
        let newest = found.newest(10, ServerUser::current()).unwrap();
        assert_eq!((newest.major(), newest.bin_dir()), (17, first17.as_path()));
    }

    #[test]
    fn newest_passes_over_old_majors_and_says_so() {
        let tree = Tree::new();
        let old = tree.server("old", 9);
        let search = Search {
            path: vec![old.clone()],
            ..tree.empty_search()
        };
        let err = search
            .find_with(probe)
            .newest(10, ServerUser::current())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no usable PostgreSQL server binaries found in $WALSTREAM_PG<N>_BIN"),
            "{err}"
        );
        assert!(
            err.ends_with(&format!(
                ": {} (PostgreSQL 9: older than 10)",
                old.display()
            )),
            "{err}"
        );
        // A directory the user named is the only place looked.
        let one = Installations::one(Installation {
            major: 9,
            bin_dir: old.clone(),
            source: Source::Given,
        });
        assert_eq!(
            one.newest(10, ServerUser::current())
                .unwrap_err()
                .to_string(),
            format!(
                "no usable PostgreSQL server binaries found: {} (PostgreSQL 9: older than 10)",
                old.display()
            )
        );
    }

    #[test]
    fn a_named_directory_must_hold_the_server_tools() {
        let err = Installation::at(Path::new("/nonexistent/bin"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/nonexistent/bin does not hold postgres, initdb and pg_ctl"
        );
    }

    #[test]
    fn major_versions_from_postgres_version() {
        for (printed, major) in [
            (
                "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n",
                Some(15),
            ),
            ("postgres (PostgreSQL) 18.1\n", Some(18)),
            ("postgres (PostgreSQL) 18beta1\n", Some(18)),
            ("postgres (PostgreSQL) 17rc1\n", Some(17)),
            ("postgres (PostgreSQL) 19devel\n", Some(19)),
            ("postgres (PostgreSQL) 9.6.24\n", Some(9)),
            ("postgres (PostgreSQL)\n", None),
            ("", None),
        ] {
            assert_eq!(parse_major(printed), major, "{printed:?}");
        }
    }

    #[test]
    fn major_variables_are_walstream_pg_n_bin() {
        for (name, major) in [
            ("WALSTREAM_PG16_BIN", Some(16)),
            ("WALSTREAM_PG9_BIN", Some(9)),
            ("WALSTREAM_PG_BIN", None),
            ("WALSTREAM_PG_CACHE", None),
            ("WALSTREAM_PGX_BIN", None),
            ("WALSTREAM_PG16_BINS", None),
        ] {
            assert_eq!(major_variable(&OsString::from(name)), major, "{name}");
        }
    }

    #[test]
    fn places_follow_the_search_order() {
        let tree = Tree::new();
        let search = Search {
            caches: vec![PathBuf::from("/c1"), PathBuf::from("/c2")],
            system: PathBuf::from("/usr/lib/postgresql"),
            ..tree.empty_search()
        };
        assert_eq!(
            search.places(),
            "$WALSTREAM_PG<N>_BIN, $WALSTREAM_PG_BIN, /c1/<N>/bin, /c2/<N>/bin, PATH, \
             `pg_config --bindir`, /usr/lib/postgresql/<N>/bin"
        );
    }
}
