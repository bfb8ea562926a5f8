//! The spawn-app harness for scenarios: the WeCom simulator, the application with its worker on,
//! a tap on the exchange, a fresh store; `finish` cleans up the exchange, queues and database.

use super::*;
use groupwatch::core::model::{EventType, GroupEvent};
use groupwatch::sim::{self, SimClient, SimServer};
use groupwatch::tools::replay::Replayer;
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Harness {
    pub app: Option<TestApp>,
    pub sim: SimServer,
    pub simc: SimClient,
    pub tap: Tap,
    pub conn: lapin::Connection,
    pub store: TestStore,
    pub exchange: String,
    pub topology: groupwatch::queue::broker::Topology,
    pub config: String,
}

impl Harness {
    pub async fn start(store: TestStore) -> Harness {
        Self::start_with(store, Default::default()).await
    }

    pub async fn start_with(store: TestStore, hooks: groupwatch::app::Hooks) -> Harness {
        Self::start_custom(store, hooks, pipeline_config).await
    }

    /// `make_config(exchange, store, api_base)` writes the app's configuration.
    pub async fn start_custom(
        store: TestStore,
        hooks: groupwatch::app::Hooks,
        make_config: impl Fn(&str, &TestStore, &str) -> String,
    ) -> Harness {
        Self::start_with_state(store, hooks, sim_state(), make_config).await
    }

    /// [`Harness::start_custom`] with the simulator starting from `state`.
    pub async fn start_with_state(
        store: TestStore,
        hooks: groupwatch::app::Hooks,
        state: sim::SimState,
        make_config: impl Fn(&str, &TestStore, &str) -> String,
    ) -> Harness {
        let sim = sim::spawn(state, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let simc = SimClient::new(sim.base_url());
        let exchange = unique_exchange();
        let config = make_config(&exchange, &store, &sim.base_url());
        let app = spawn_app_hooked(&config, hooks).await;
        let conn = amqp().await;
        let tap = Tap::new(&conn, &exchange).await;
        let topology = app.topology.clone();
        Harness { app: Some(app), sim, simc, tap, conn, store, exchange, topology, config }
    }

    pub fn app(&self) -> &TestApp {
        self.app.as_ref().expect("app running")
    }

    pub fn replayer(&self) -> Replayer {
        Replayer::wecom(self.app().config.tenant(TENANT).unwrap(), &self.app().callback_url(TENANT)).unwrap()
    }

    pub async fn callback(&self, xml: &str) {
        assert_eq!(self.replayer().post(xml.as_bytes()).await.unwrap(), 200);
    }

    /// Creates the group through a `create` callback and consumes its 3 events.
    pub async fn created(&self) -> Vec<GroupEvent> {
        self.callback(&callback_xml(1572505490, "create", None, &[], None)).await;
        self.tap.expect(3, WAIT).await
    }

    /// The application's configuration, typed.
    pub fn typed_config(&self) -> groupwatch::config::Config {
        groupwatch::config::Config::from_toml(&self.config, std::iter::empty()).expect("valid test config")
    }

    /// Stops the app and starts a new one on the same store, exchange and simulator.
    pub async fn restart(&mut self, hooks: groupwatch::app::Hooks) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        self.app = Some(spawn_app_hooked(&self.config, hooks).await);
    }

    /// `groupwatch resync` for the test tenant, waiting for the app's worker to finish it.
    pub async fn resync(&self) -> groupwatch::worker::resync::Summary {
        let config = self.typed_config();
        let mut summaries =
            groupwatch::app::resync_once(&config, None, &[TENANT.to_owned()], &[], Some(WAIT)).await.unwrap();
        summaries.remove(0)
    }

    pub async fn finish(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        cleanup(&self.conn, &self.topology).await;
        self.store.drop_database().await;
        drop(self.sim);
    }
}

/// The worker on, the WeCom tenant calling the simulator at `api_base`.
pub fn pipeline_config(exchange: &str, store: &TestStore, api_base: &str) -> String {
    pipeline_test_config(exchange, store, api_base).toml()
}

pub fn pipeline_test_config(exchange: &str, store: &TestStore, api_base: &str) -> TestConfig {
    TestConfig::new(exchange, &store.url()).with_worker().wecom_api(api_base)
}

pub fn kinds(events: &[GroupEvent]) -> Vec<(EventType, Option<&str>, Option<i64>)> {
    events.iter().map(|e| (e.event_type, e.member.as_ref().map(|m| m.userid.as_str()), e.occurred_at)).collect()
}

pub fn fault_config(exchange: &str, store: &TestStore, api_base: &str) -> String {
    pipeline_test_config(exchange, store, api_base)
        .worker_value("api_timeout_ms", 400)
        .worker_value("api_rate_limit_pause_ms", 700)
        .toml()
}
