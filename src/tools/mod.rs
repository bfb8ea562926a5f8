//! Tools for people rather than for the pipeline: `replay` plays a vendor, `demo` is the tour.

pub mod demo;
pub mod replay;
