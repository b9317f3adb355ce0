//! Chat servers over a Redis Cluster of the test's own: six
//! `redis-server` processes on loopback (tests/support's `RedisCluster`),
//! three masters with a replica each, stopped by process id. The harness
//! itself is checked first (`harness.rs`).

// Linked servers only: built with the `redis` feature (on by default).
#![cfg(feature = "redis")]

mod harness;
