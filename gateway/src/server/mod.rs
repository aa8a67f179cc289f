//! Serving: the accept loop and its connections, the data listener's stack, turning a config into running parts,
//! and replacing them on a reload. ([`crate::run`] puts them together with the admin listener.)

pub mod accept;
pub mod assemble;
pub mod check;
pub mod data;
pub mod descriptors;
pub mod http2;
pub mod local_streams;
pub mod reload;
pub mod served_call;
pub mod stack;
