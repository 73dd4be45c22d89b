//! Passwords fetched when a server asks for one: [`PasswordProvider`], for credentials that
//! expire (cloud IAM tokens, Entra ID tokens, vault leases).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::Host;
use crate::error::{Error, ErrorKind};

/// The error a [`PasswordProvider`] fails with: any error (`?` converts most into it).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`PasswordProvider::password`] returns: a future of the password.
pub type PasswordFuture<'a> = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send + 'a>>;

/// Where a password is wanted: the server and the role of one connection attempt (an IAM
/// token, for one, is signed for a host, a port and a user).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordRequest {
    /// The host being connected to (the name, not the `hostaddr`).
    pub host: Host,
    /// Its port.
    pub port: u16,
    /// The role.
    pub user: String,
    /// The database (`replication` for a physical replication connection, as the password
    /// file names it).
    pub dbname: String,
}

impl PasswordRequest {
    /// A request for `user` on `dbname` at `host` and `port`: what a connection asks with,
    /// made by hand to test a provider.
    pub fn new(host: Host, port: u16, user: impl Into<String>, dbname: impl Into<String>) -> Self {
        Self {
            host,
            port,
            user: user.into(),
            dbname: dbname.into(),
        }
    }
}

/// A source of passwords asked each time a server requests one, in place of a static
/// password: every connection and every reconnect of a stream calls it anew, so a credential
/// that expires is fetched fresh.
///
/// It is called during authentication, while the server waits (PostgreSQL's
/// `authentication_timeout`, a minute by default) and within `connect_timeout`: answer
/// promptly, from a cache refreshed before the credential expires if fetching is slow. A
/// failure ends the connection attempt with an [`ErrorKind::Auth`] error that keeps the
/// provider's message and is found again with [`Error::password_provider_error`]; it is not
/// retryable, so retry inside the provider if its source has transient failures. When no
/// provider is set, the password comes from the conninfo (or `PGPASSWORD`), else the password
/// file, as in libpq.
///
/// A closure `Fn(PasswordRequest) -> impl Future<Output = Result<String, BoxError>>` is a
/// provider:
///
/// ```
/// use std::sync::Arc;
/// use walconn::{BoxError, Config, PasswordRequest};
///
/// # async fn fetch_token(host: &str, user: &str) -> Result<String, std::io::Error> { Ok(String::new()) }
/// let mut config = Config::parse_with_env("host=db.example user=app sslmode=require", |_| None)?;
/// config.set_password_provider(Arc::new(|request: PasswordRequest| async move {
///     // A token valid for fifteen minutes, fetched for each connection.
///     let token = fetch_token(&request.host.to_string(), &request.user).await?;
///     Ok::<_, BoxError>(token)
/// }));
/// # Ok::<(), walconn::Error>(())
/// ```
pub trait PasswordProvider: Send + Sync {
    /// The password for `request`.
    fn password(&self, request: PasswordRequest) -> PasswordFuture<'_>;
}

impl<F, Fut> PasswordProvider for F
where
    F: Fn(PasswordRequest) -> Fut + Send + Sync,
    Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
{
    fn password(&self, request: PasswordRequest) -> PasswordFuture<'_> {
        Box::pin(self(request))
    }
}

/// A provider as a [`Config`](super::Config) holds it: compared by identity, and shown in
/// `Debug` output by its presence only.
#[derive(Clone)]
pub(crate) struct ProviderSlot(pub(crate) Arc<dyn PasswordProvider>);

impl fmt::Debug for ProviderSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordProvider")
    }
}

impl PartialEq for ProviderSlot {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ProviderSlot {}

/// A [`PasswordProvider`] failed: the source of the [`ErrorKind::Auth`] error that ended the
/// connection attempt, holding the provider's own error ([`error`](Self::error)). It is
/// transparent: its text is the provider error's, and its
/// [`source`](std::error::Error::source) is the provider error's source, so that error
/// reporters print that text once.
#[derive(Debug)]
pub struct PasswordProviderError {
    error: BoxError,
}

impl PasswordProviderError {
    /// The error the provider returned.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

#[cfg(test)]
impl PasswordProviderError {
    /// The error a provider returning `error` ends in (the error module's chain test).
    pub(crate) fn for_test(error: impl Into<BoxError>) -> Self {
        Self {
            error: error.into(),
        }
    }
}

impl fmt::Display for PasswordProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for PasswordProviderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Asks `provider` for the password of `request`; its failure becomes an
/// [`ErrorKind::Auth`] error naming the role and server, with the provider's error as source.
pub(crate) async fn ask(
    provider: &ProviderSlot,
    request: PasswordRequest,
) -> crate::Result<String> {
    let what = format!(
        "the password provider failed for user \"{}\" at \"{}\", port {}",
        request.user, request.host, request.port
    );
    provider.0.password(request).await.map_err(|error| {
        Error::new(ErrorKind::Auth, what).with_source(PasswordProviderError { error })
    })
}

// This accessor lives beside the type it finds, rather than in `error.rs`, so that the
// provider's whole contract reads in one file.
impl Error {
    /// The [`PasswordProvider`]'s failure, when a provider failed to give a password (an
    /// [`ErrorKind::Auth`] error that no server reported).
    pub fn password_provider_error(&self) -> Option<&PasswordProviderError> {
        std::error::Error::source(self)?.downcast_ref()
    }
}
