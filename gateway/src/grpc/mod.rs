//! The parts of the gRPC wire protocol the gateway handles itself: message framing, `grpc-timeout`, and reading a
//! bounded unary body.

pub mod body;
pub mod code;
pub mod frame;
pub mod timeout;
