//! WeCom (企业微信): the `change_external_chat` callback (`xml`, `callback`), the server API
//! (`api`) and the customer-group administration calls (`admin`).

pub mod admin;
pub mod api;
pub mod callback;
pub mod codec;
pub mod config;
pub mod xml;

pub use admin::WecomAdmin;
pub use api::{ApiLimits, ListedChat, WecomClient, OWNER_BATCH};
pub use callback::report_of;
