//! Tower layers of the data listener's stack, one concern each (assembled in [`crate::service::data_service`]).

pub mod deadline;
pub mod load_shed;
