//! The user that runs the server.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::Error;

/// The user that runs the servers: the current user, or `postgres` when we are root (PostgreSQL
/// refuses to run as root).
///
/// Server-side commands (`initdb`, `pg_ctl`, `postgres`) go through [`apply`](Self::apply),
/// which switches the child's uid and gid directly (no `runuser` or `sudo` needed; the child
/// keeps the `postgres` user's primary group only). Clients such as `psql` may run as anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerUser {
    /// `Some((uid, gid))` when commands must switch to that user.
    switch_to: Option<(u32, u32)>,
}

impl ServerUser {
    /// The current user, or `postgres` (from `/etc/passwd`) when we are root; an error when we
    /// are root and there is no `postgres` user.
    pub fn detect() -> Result<Self, Error> {
        // `/proc/self` is owned by the effective uid of the process looking at it.
        let euid = fs::metadata("/proc/self")
            .map_err(|e| Error::new(format!("reading /proc/self: {e}")))?
            .uid();
        if euid != 0 {
            return Ok(Self::current());
        }
        let passwd = fs::read_to_string("/etc/passwd")
            .map_err(|e| Error::new(format!("reading /etc/passwd: {e}")))?;
        postgres_ids(&passwd)
            .map(|ids| Self {
                switch_to: Some(ids),
            })
            .ok_or_else(|| {
                Error::new(
                    "running as root, and PostgreSQL refuses to run as root, but there is no \
                     `postgres` user to run it as; create one (`useradd --system postgres`) or \
                     run as an ordinary user",
                )
            })
    }

    /// The current user, whoever that is: for callers that are not root.
    pub fn current() -> Self {
        Self { switch_to: None }
    }

    /// Makes `cmd` run as the server user.
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        if let Some((uid, gid)) = self.switch_to {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Hands `path` to the server user (nothing to do when that is the current user).
    pub fn chown(&self, path: &Path) -> Result<(), Error> {
        if let Some((uid, gid)) = self.switch_to {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| Error::new(format!("chown {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Whether servers run as another user than the current one (we are root).
    pub fn is_other_user(&self) -> bool {
        self.switch_to.is_some()
    }

    /// `"the postgres user"` or `"the current user"`, for messages.
    pub fn describe(&self) -> &'static str {
        if self.switch_to.is_some() {
            "the postgres user"
        } else {
            "the current user"
        }
    }
}

/// The uid and gid of `postgres` in the text of `/etc/passwd`.
fn postgres_ids(passwd: &str) -> Option<(u32, u32)> {
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres"))?;
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_line_of_passwd_gives_uid_and_gid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgresql:x:7:7::/:/bin/sh\n\
                      postgres:x:101:104:PostgreSQL administrator:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(postgres_ids(passwd), Some((101, 104)));
        assert_eq!(postgres_ids("root:x:0:0:root:/root:/bin/bash\n"), None);
        assert_eq!(postgres_ids("postgres:x:abc:104::/:/bin/sh\n"), None);
    }

    #[test]
    fn the_current_user_switches_nothing() {
        let user = ServerUser::current();
        assert!(!user.is_other_user());
        assert_eq!(user.describe(), "the current user");
        let mut cmd = Command::new("true");
        user.apply(&mut cmd);
        assert!(cmd.status().is_ok_and(|s| s.success()));
    }
}
