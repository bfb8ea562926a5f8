//! Tencent Cloud IM (腾讯云 IM): so far the REST credential (`usersig`).

pub mod usersig;
