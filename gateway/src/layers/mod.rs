//! Tower layers of the data listener's stack, one concern each (the stack itself is assembled in `server::stack`).

pub mod load_shed;
