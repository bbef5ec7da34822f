//! Nexmark, the streaming benchmark Flink, RisingWave and Arroyo use: queries Q3, Q5,
//! Q8 and Q11 over the `nexmark` crate's deterministic event stream, on any backend,
//! checkpointed and resumable after a crash with exactly-once results.

pub mod cluster;
pub mod driver;
pub mod events;
pub mod parts;
pub mod queries;
pub mod runtime;

pub use driver::{JobConfig, Summary, run};
pub use queries::{QueryKind, reference};
