//! DingTalk (钉钉): group events by HTTP push or Stream mode, and `chat/get`.
//!
//! - [`events`]: the six group events (camelCase or PascalCase) mapped to reports, for both
//!   channels.
//! - [`codec`]: the HTTP push (`{"encrypt":…}`, WXBizMsgCrypt with the owner key).
//! - [`stream`]: the Stream-mode client (groupwatch connects out over WebSocket).
//! - [`api`]: gettoken and chat/get; resync's list of the chats already known.

pub mod api;
pub mod codec;
pub mod config;
pub mod events;
pub mod stream;

pub use api::{DingtalkClient, KnownChats};
