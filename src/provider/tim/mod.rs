//! Tencent Cloud IM (腾讯云 IM): signed JSON group callbacks and the REST group API, signed with a
//! UserSig.

pub mod api;
pub mod callback;
pub mod codec;
pub mod config;
pub mod usersig;

pub use api::TimClient;
pub use codec::TimCodec;
