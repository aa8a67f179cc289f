//! The parts of the gRPC wire protocol the gateway handles itself: message framing, `grpc-timeout`, reading a
//! bounded unary body, and decoding a compressed answer.

pub mod body;
pub mod code;
pub mod compression;
pub mod frame;
pub mod timeout;
