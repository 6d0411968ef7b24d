//! The distributed runtime: a JobManager that schedules a job's subtasks into the slots
//! TaskManager processes offer, and coordinates checkpoints and restarts across them.
//!
//! - [`wire`]: framing of every connection.
//! - [`exchange`]: data channels between TaskManagers, with credit-based flow control.
//! - [`protocol`]: the control messages between JobManager and TaskManagers.
//! - [`jobmanager`]: registration, heartbeats, slot assignment and the deployment of attempts.
//! - [`taskmanager`]: the TaskManager process's loop: register, deploy what it is told, report.
//!
//! Every process builds the same job graph from the same program, so a deployment names
//! subtasks by position and never ships code.

pub mod exchange;
pub mod jobmanager;
pub mod protocol;
pub mod taskmanager;
pub mod wire;

pub use jobmanager::{ClusterConfig, JobManagerCluster};
pub use taskmanager::{TaskManager, TaskManagerConfig};
