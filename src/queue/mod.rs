//! RabbitMQ: the one connection (`broker`), the durable hand-off of callbacks to the inbound
//! shards (`inbound`), events out (`publish`) and parked messages (`dead`).

pub mod broker;
pub mod dead;
pub mod inbound;
pub mod publish;
