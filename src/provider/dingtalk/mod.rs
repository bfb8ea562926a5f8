//! DingTalk (钉钉): group events by HTTP push or Stream mode, and `chat/get`.

pub mod config;
