//! The integration suite, one binary: the real application on random ports, the real RabbitMQ,
//! SQLite files and PostgreSQL databases, and the vendor simulators. Each module is one concern;
//! `common` holds the spawn-app harness, the taps and the test-config builders.

/// A scenario `async fn name(store: TestStore)` run twice, as `name::sqlite` and `name::postgres`.
/// Defined before the modules so that every one of them can use it.
macro_rules! with_both_stores {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario(TestStore::sqlite().await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$scenario(TestStore::postgres().await).await
                }
            }
        )*
    };
}

mod common;
mod schema_support;

mod compose;
mod diff_props;
mod dingtalk;
mod faults_broker;
mod fixtures;
mod ingress;
mod instances;
mod intake;
mod metrics;
mod ops;
mod outbox;
mod outbox_props;
mod pipeline;
mod process;
mod read_api;
mod resync;
mod schema;
mod secrets;
mod sim;
mod sim_dingtalk;
mod sim_tim;
mod sim_wecom_admin;
mod store;
mod tim;
mod upstream;
mod wecom_admin;
