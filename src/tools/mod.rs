//! Tools for people rather than for the pipeline: `replay` plays a vendor, `demo` is the tour,
//! `wecom_admin` administers WeCom customer groups, `status` shows the instances sharing a store.

pub mod demo;
pub mod replay;
pub mod status;
pub mod wecom_admin;
