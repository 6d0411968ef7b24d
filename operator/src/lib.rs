//! The Weir operator: deploys each `StreamJob` as JobManager and TaskManager pods (see
//! [`resources`]), reconciling as a pipeline whose decision is the pure function
//! [`decide::decide`], and reports the job's lifecycle in its status ([`controller`]).

pub mod controller;
pub mod decide;
pub mod events;
pub mod metrics;
pub mod report;
pub mod resources;
pub mod storage;
