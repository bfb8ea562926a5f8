//! RabbitMQ: the one connection (`broker`), the durable hand-off of callbacks to the intake queue
//! (`inbound`), the intake forwarded to the chats' shard queues (`forward`), events out
//! (`publish`), parked messages (`dead`) and a change of the shard count (`reshard`).

pub mod broker;
pub mod dead;
pub mod forward;
pub mod inbound;
pub mod publish;
pub mod reshard;
