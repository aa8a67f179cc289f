//! The tiered cache over real Redis: a single `redis-server` and a 3-master Redis Cluster, both started by the tests.

mod common;
mod faults;
mod races;
mod shared;
