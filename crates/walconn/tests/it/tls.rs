//! TLS (filled next).
