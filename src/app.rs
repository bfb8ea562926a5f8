//! Wiring: builds the store, the broker, the inbound hand-off, the HTTP router, the workers, the
//! outbox sweeper and (optionally) the periodic resync from one [`Config`], and runs them until a
//! shutdown future resolves (the mini-redis pattern: tests pass their own).

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use crate::core::consistency::{Consistency, Judge};
use crate::core::model::Provider;
use crate::ingress::{self, CallbackState};
use crate::ops::Readiness;
use crate::provider::wecom::{ApiLimits, WecomClient};
use crate::queue::broker::Broker;
use crate::queue::inbound::{Batching, Inbound};
use crate::queue::publish::Publisher;
use crate::store::{self, SnapshotStore};
use crate::telemetry;
use crate::worker::pipeline::{Halt, Pipeline, Settings};
use crate::worker::resync;
use crate::worker::{Worker, WorkerSettings};

/// Test-only fault injection points.
#[derive(Default)]
pub struct Hooks {
    /// Makes the worker stop dead at a chosen point of an attempt, as a crash would.
    pub halt: Option<Arc<Halt>>,
}

pub struct Application {
    config: Config,
    listener: Option<TcpListener>,
    /// `/healthz`, `/readyz`, `/metrics` and the read API; bound whenever `listener` is.
    ops_listener: Option<TcpListener>,
    readiness: Arc<Readiness>,
    store: Arc<dyn SnapshotStore>,
    /// The read API's pool, when `[api] tokens` turns it on.
    reader: Option<Arc<dyn SnapshotStore>>,
    worker: Option<Arc<Worker>>,
    client: WecomClient,
    broker: Broker,
    broker_task: tokio::task::JoinHandle<()>,
    inbound: Inbound,
    /// Cancelled last, once nothing needs the broker any more.
    shutdown: CancellationToken,
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and starts connecting to the broker.
    /// Does not wait for the broker: `/readyz` says when it is there.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Hooks::default()).await
    }

    pub async fn build_with(config: Config, hooks: Hooks) -> anyhow::Result<Self> {
        let store = store::connect(config.store.url.expose()).await.map_err(|e| anyhow::anyhow!("store: {e}"))?;
        let shutdown = CancellationToken::new();
        let (broker, broker_task) = Broker::start(&config.amqp, shutdown.child_token());
        let inbound = Inbound::new(
            broker.clone(),
            Batching { max_events: config.amqp.handoff_max_batch, in_flight: config.amqp.handoff_in_flight },
        );
        let (pipeline, client) = build_pipeline(&config, store.clone(), &broker, hooks.halt);
        let worker = config.worker.enabled.then(|| {
            let settings = WorkerSettings {
                prefetch: config.worker.prefetch,
                actor_idle: Duration::from_secs(config.worker.actor_idle_secs),
                dedupe_window: Duration::from_secs(config.worker.dedupe_window_secs),
                dedupe_max: config.worker.dedupe_max_keys,
            };
            let tenants = config.wecom.iter().map(|t| (Provider::Wecom, t.tenant.clone())).collect();
            Arc::new(Worker::new(pipeline.clone(), broker.clone(), settings, tenants))
        });
        let (listener, ops_listener) = if config.http.enabled {
            let bind = |addr: SocketAddr, key: &'static str| async move {
                TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({key}): {e}"))
            };
            (
                Some(bind(config.http.listen, "http.listen").await?),
                Some(bind(config.http.ops_listen, "http.ops_listen").await?),
            )
        } else {
            (None, None)
        };
        // Only when the read API is on: a pool of its own, so readers never take the workers'.
        let reader = if config.http.enabled && !config.api.tokens.is_empty() {
            let reader = store::connect_reader(config.store.url.expose())
                .await
                .map_err(|e| anyhow::anyhow!("store (read API): {e}"))?;
            Some(reader)
        } else {
            None
        };
        let readiness =
            Arc::new(Readiness::new(broker.clone(), store.clone(), worker.as_ref().map(|w| w.health.clone())));
        Ok(Self {
            config,
            listener,
            ops_listener,
            readiness,
            store,
            reader,
            worker,
            client,
            broker,
            broker_task,
            inbound,
            shutdown,
        })
    }

    /// The callback listener's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The ops listener's address (`/healthz`, `/readyz`, `/metrics`, the read API).
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// What `/readyz` answers from (and how many store pings it cost).
    pub fn readiness(&self) -> Arc<Readiness> {
        self.readiness.clone()
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The callback listener's routes: the callbacks, and the ops routes only when
    /// `http.ops_on_callback_listener` keeps them there.
    fn router(&self) -> anyhow::Result<Router> {
        let mut callbacks = Router::new()
            .route("/wecom/{tenant}/callback", get(ingress::verify_url).post(ingress::receive_event))
            .with_state(CallbackState::new(&self.config.wecom, self.inbound.clone(), &self.config.http)?);
        if self.config.http.ops_on_callback_listener {
            callbacks = callbacks.merge(crate::ops::router(self.readiness.clone()));
        }
        Ok(self.bounded(callbacks))
    }

    /// The ops listener's routes: health, readiness, metrics and (with tokens) the read API.
    fn ops_router(&self) -> Router {
        let mut ops = crate::ops::router(self.readiness.clone());
        if let Some(api) = self.reader.clone().and_then(|reader| crate::api::router(reader, &self.config.api.tokens)) {
            ops = ops.merge(api);
        }
        self.bounded(ops)
    }

    fn bounded(&self, router: Router) -> Router {
        router
            .layer(DefaultBodyLimit::max(self.config.http.max_body_bytes))
            // Slow clients must not pin connections: the whole request, body included, is bounded.
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_millis(self.config.http.request_timeout_ms),
            ))
    }

    /// Runs until `signal` resolves, then stops accepting, lets in-flight requests finish and
    /// closes the broker connection.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        telemetry::metrics_handle();
        // Two phases: the signal stops intake; the broker closes only after in-flight requests
        // (and their hand-offs) have finished.
        let stop_intake = CancellationToken::new();
        let trigger = stop_intake.clone();
        // A broker that records another shard count for the exchange stops the intake as a signal
        // would, and the run then fails with the reason.
        let broker = self.broker.clone();
        let fatal = Arc::new(std::sync::OnceLock::<Arc<str>>::new());
        let fatal_reason = fatal.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = signal => {}
                reason = broker.failed() => { let _ = fatal_reason.set(reason); }
            }
            trigger.cancel();
        });
        if let Some(listener) = self.listener.as_ref() {
            let runtime = tokio::runtime::Handle::current().runtime_flavor();
            tracing::info!(addr = %listener.local_addr()?, ?runtime, "listening");
        }
        if let Some(listener) = self.ops_listener.as_ref() {
            let api = if self.config.api.tokens.is_empty() { "off" } else { "on" };
            tracing::info!(addr = %listener.local_addr()?, read_api = api, "ops listening");
        }
        let router = self.router()?;
        let ops_router = self.ops_router();
        let worker_stop = CancellationToken::new();
        let worker_task = self.worker.clone().map(|w| tokio::spawn(w.run(worker_stop.clone())));
        let resync_task = (self.worker.is_some() && self.config.resync.interval_secs > 0).then(|| {
            tokio::spawn(resync::run_periodically(
                self.client.clone(),
                self.inbound.clone(),
                self.config.wecom.clone(),
                self.config.resync.page_size,
                Duration::from_secs(self.config.resync.interval_secs),
                worker_stop.clone(),
            ))
        });
        let appchat_task =
            (self.worker.is_some() && self.config.wecom.iter().any(|t| !t.appchats.is_empty())).then(|| {
                tokio::spawn(crate::worker::appchat::poll(
                    self.inbound.clone(),
                    self.config.wecom.clone(),
                    worker_stop.clone(),
                ))
            });
        let sweep_task = self.worker.is_some().then(|| {
            tokio::spawn(crate::worker::sweep_outbox(
                self.store.clone(),
                self.inbound.clone(),
                Duration::from_secs(self.config.worker.outbox_sweep_secs),
                worker_stop.clone(),
            ))
        });
        let history_task = (self.worker.is_some() && self.config.store.history_days > 0).then(|| {
            tokio::spawn(crate::api::retention::run(
                self.store.clone(),
                self.config.store.history_days,
                worker_stop.clone(),
            ))
        });
        match (self.listener, self.ops_listener) {
            (Some(listener), Some(ops_listener)) => {
                let http = &self.config.http;
                let limits = crate::ingress::server::Limits {
                    deadline: Duration::from_millis(http.request_timeout_ms),
                    max_connections: http.max_connections,
                    shutdown_grace: Duration::from_millis(http.shutdown_grace_ms),
                };
                tokio::join!(
                    crate::ingress::server::serve(listener, router, limits, stop_intake.clone()),
                    crate::ingress::server::serve(ops_listener, ops_router, limits, stop_intake),
                );
            }
            _ => stop_intake.cancelled().await,
        }
        // Then the workers: in-flight attempts finish, everything unacked is left to redelivery.
        worker_stop.cancel();
        for task in worker_task.into_iter().chain(resync_task).chain(appchat_task).chain(sweep_task).chain(history_task)
        {
            let _ = tokio::time::timeout(Duration::from_secs(25), task).await;
        }
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.broker_task).await;
        if let Some(reason) = fatal.get() {
            return Err(anyhow::anyhow!("{reason}"));
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The fetch → diff → publish → save pipeline and the WeCom client behind it, as `serve` and
/// `resync` both use them.
pub fn build_pipeline(
    config: &Config,
    store: Arc<dyn SnapshotStore>,
    broker: &Broker,
    halt: Option<Arc<Halt>>,
) -> (Arc<Pipeline>, WecomClient) {
    let limits = ApiLimits {
        per_minute: config.worker.api_rate_per_minute,
        concurrency: config.worker.api_concurrency,
        timeout: Duration::from_millis(config.worker.api_timeout_ms),
        rate_limit_pause: Duration::from_millis(config.worker.api_rate_limit_pause_ms),
    };
    let client = WecomClient::new(&config.wecom, limits);
    let pipeline = Pipeline {
        source: Arc::new(client.clone()),
        store,
        publisher: Publisher::new(broker.clone()),
        judge: Judge {
            rule: Consistency::MemberVersion,
            stale_horizon_ms: config.worker.stale_horizon_secs as i64 * 1000,
        },
        settings: Settings {
            coalesce: Duration::from_millis(config.worker.coalesce_ms),
            retry_delays: config.worker.retry_delays_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
            confirm_delay: Duration::from_millis(config.worker.confirm_delay_ms),
        },
        halt,
    };
    (Arc::new(pipeline), client)
}

/// `groupwatch resync`: queues a reconcile request for every group of the given tenants and, with
/// `wait`, follows the running workers until they are done; returns a summary per tenant.
pub async fn resync_once(
    config: &Config,
    tenants: &[String],
    owners_override: &[String],
    wait: Option<Duration>,
) -> anyhow::Result<Vec<resync::Summary>> {
    let store = store::connect(config.store.url.expose()).await.map_err(|e| anyhow::anyhow!("store: {e}"))?;
    let stop = CancellationToken::new();
    let (broker, broker_task) = Broker::start(&config.amqp, stop.child_token());
    broker
        .connected(Duration::from_secs(10))
        .await
        .map_err(|_| anyhow::anyhow!("cannot reach RabbitMQ at amqp.url"))?;
    let inbound = Inbound::new(broker.clone(), Batching::default());
    let (_, client) = build_pipeline(config, store.clone(), &broker, None);
    let mut summaries = Vec::new();
    for t in config.wecom.iter().filter(|t| tenants.is_empty() || tenants.contains(&t.tenant)) {
        let owners = if owners_override.is_empty() { t.resync_owners()? } else { owners_override.to_vec() };
        let summary =
            resync::resync_tenant(&client, &inbound, &store, &t.tenant, &owners, config.resync.page_size, wait)
                .await
                .map_err(|e| anyhow::anyhow!("resync {}: {e}", t.tenant))?;
        summaries.push(summary);
    }
    drop(inbound);
    stop.cancel();
    let _ = broker_task.await;
    Ok(summaries)
}
