//! Tools for people rather than for the pipeline: `replay` plays a vendor, `demo` is the tour,
//! `wecom_admin` administers WeCom customer groups.

pub mod demo;
pub mod replay;
pub mod wecom_admin;
