//! A primary and its standbys: streaming replication pairs for the physical and failover tests.
