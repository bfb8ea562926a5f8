//! The provider-neutral core: what a group, a member, a change report and an event are, the
//! diff between two snapshots, stable ids and the clock. No I/O, no vendor formats.

pub mod clock;
pub mod consistency;
pub mod diff;
pub mod ids;
pub mod model;
pub mod report;
