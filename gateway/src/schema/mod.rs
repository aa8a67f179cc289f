//! What the gateway knows of the methods it serves beyond their paths: whether they stream.

mod streams_seen;

pub use streams_seen::StreamsSeen;
