//! Test support: throwaway PostgreSQL clusters (filled by the test-server issue).
