//! RabbitMQ: the one connection (`broker`), the durable hand-off of callbacks to the inbound
//! shards (`inbound`), events out (`publish`), parked messages (`dead`) and a change of the shard count (`reshard`).

pub mod broker;
pub mod dead;
pub mod inbound;
pub mod publish;
pub mod reshard;
