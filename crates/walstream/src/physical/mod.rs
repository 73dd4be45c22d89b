//! Physical replication: a WAL stream from a physical slot or a position, with status updates,
//! resume and timeline following, and the WAL segment files `pg_receivewal` writes.
