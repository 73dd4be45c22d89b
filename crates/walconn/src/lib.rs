//! A pure-Rust PostgreSQL replication connection: conninfo, TLS, authentication, replication
//! commands and the CopyBoth duplex of raw CopyData frames.

// Removed with the next commit, which adds the connection that uses these helpers.
#![allow(dead_code, reason = "helpers for the connection, which lands next")]

mod config;
mod error;
mod pgpass;

pub use config::{
    ChannelBinding, Config, Host, Replication, SslMode, SslRootCert, TargetSessionAttrs,
    DEFAULT_PORT,
};
pub use error::{DbError, Error, ErrorKind, Result};
pub use walproto;
