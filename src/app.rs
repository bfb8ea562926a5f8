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
use crate::ingress::aliases::Aliases;
use crate::ingress::{self, CallbackState};
use crate::ops::Readiness;
use crate::provider::dingtalk::config::Mode as DingtalkMode;
use crate::provider::dingtalk::stream as dingtalk_stream;
use crate::provider::registry::Registry;
use crate::queue::broker::Broker;
use crate::queue::inbound::{Batching, Inbound};
use crate::queue::publish::Publisher;
use crate::store::{self, SnapshotStore};
use crate::telemetry;
use crate::worker::cluster::Membership;
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
    /// This instance among the others sharing the broker and store.
    membership: Arc<Membership>,
    registry: Arc<Registry>,
    aliases: Arc<Aliases>,
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
        let registry = Arc::new(Registry::build(&config)?.with_store(store.clone()));
        let aliases = Arc::new(Aliases::new(store.clone()));
        let pipeline = build_pipeline(&config, registry.clone(), store.clone(), &broker, hooks.halt);
        let membership = Membership::new(
            store.clone(),
            config.worker.enabled,
            config.amqp.inbound_shards,
            Duration::from_secs(config.worker.rebalance_secs),
        );
        registry.join(&membership.shared);
        let worker = config.worker.enabled.then(|| {
            let settings = WorkerSettings {
                prefetch: config.worker.prefetch,
                actor_idle: Duration::from_secs(config.worker.actor_idle_secs),
                dedupe_window: Duration::from_secs(config.worker.dedupe_window_secs),
                dedupe_max: config.worker.dedupe_max_keys,
            };
            let tenants = registry.tenants();
            Arc::new(Worker::new(
                pipeline.clone(),
                broker.clone(),
                inbound.clone(),
                aliases.clone(),
                settings,
                tenants,
                membership.clone(),
            ))
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
        // Not ready until each stream-mode DingTalk tenant is connected (the intake runs with HTTP).
        if config.http.enabled {
            for t in config.dingtalk.iter().filter(|t| t.mode == DingtalkMode::Stream) {
                readiness.links().set(&dingtalk_stream::link_name(&t.tenant), false);
            }
        }
        Ok(Self {
            config,
            listener,
            ops_listener,
            readiness,
            store,
            reader,
            worker,
            membership,
            registry,
            aliases,
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
        let state =
            CallbackState::new(self.registry.clone(), self.inbound.clone(), self.aliases.clone(), &self.config.http);
        let mut callbacks = Router::new()
            .route("/{provider}/{tenant}/callback", get(ingress::callback).post(ingress::callback))
            .with_state(state);
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
        // Every instance forwards the intake to the shard queues (one at a time receives), so
        // that callbacks taken here move on even where no worker runs.
        let forward_stop = CancellationToken::new();
        let forward_task =
            tokio::spawn(crate::queue::forward::run(self.broker.clone(), self.readiness.links(), forward_stop.clone()));
        let worker_stop = CancellationToken::new();
        let membership_stop = CancellationToken::new();
        let membership_task = tokio::spawn(self.membership.clone().run(membership_stop.clone()));
        let worker_task = self.worker.clone().map(|w| tokio::spawn(w.run(worker_stop.clone())));
        let resync_task = (self.worker.is_some() && self.config.resync.interval_secs > 0).then(|| {
            tokio::spawn(resync::run_periodically(
                self.registry.clone(),
                self.inbound.clone(),
                self.config.clone(),
                self.membership.clone(),
                Duration::from_secs(self.config.resync.interval_secs),
                worker_stop.clone(),
            ))
        });
        let appchat_task =
            (self.worker.is_some() && self.config.wecom.iter().any(|t| !t.appchats.is_empty())).then(|| {
                tokio::spawn(crate::worker::appchat::poll(
                    self.inbound.clone(),
                    self.config.wecom.clone(),
                    self.membership.clone(),
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
        // DingTalk Stream mode is intake, like the callback route: it runs where HTTP does, and
        // stops taking events with it.
        let stream_tasks: Vec<_> = if self.listener.is_some() {
            self.config
                .dingtalk
                .iter()
                .filter(|t| t.mode == DingtalkMode::Stream)
                .map(|t| {
                    let client = dingtalk_stream::StreamClient::new(
                        t,
                        self.inbound.clone(),
                        self.aliases.clone(),
                        self.broker.clone(),
                        self.readiness.links(),
                    );
                    tokio::spawn(client.run(stop_intake.clone()))
                })
                .collect()
        } else {
            Vec::new()
        };
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
        for task in stream_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        // Then the workers: in-flight attempts finish, everything unacked is left to redelivery.
        worker_stop.cancel();
        for task in worker_task.into_iter().chain(resync_task).chain(appchat_task).chain(sweep_task).chain(history_task)
        {
            let _ = tokio::time::timeout(Duration::from_secs(25), task).await;
        }
        // What it has not forwarded stays in the intake queue for the next forwarder.
        forward_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), forward_task).await;
        // Leaving the cluster lets the others take this instance's shards at their next tick
        // instead of after its heartbeat expires.
        membership_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), membership_task).await;
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.broker_task).await;
        if let Some(reason) = fatal.get() {
            return Err(anyhow::anyhow!("{reason}"));
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The load → fetch → judge → diff → commit → publish pipeline, as `serve` runs it.
pub fn build_pipeline(
    config: &Config,
    registry: Arc<Registry>,
    store: Arc<dyn SnapshotStore>,
    broker: &Broker,
    halt: Option<Arc<Halt>>,
) -> Arc<Pipeline> {
    Arc::new(Pipeline {
        registry,
        store,
        publisher: Publisher::new(broker.clone()),
        marks: crate::worker::marks::Marks::new(),
        settings: Settings {
            coalesce: Duration::from_millis(config.worker.coalesce_ms),
            retry_delays: config.worker.retry_delays_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
            confirm_delay: Duration::from_millis(config.worker.confirm_delay_ms),
            stale_horizon: Duration::from_secs(config.worker.stale_horizon_secs),
            leading_edge: config.worker.leading_edge,
        },
        halt,
    })
}

/// `groupwatch resync`: queues a reconcile request for every group of the chosen tenants (all
/// providers, or `provider`'s; all tenants, or those named) and, with `wait`, follows the
/// running workers until they are done; returns a summary per tenant.
pub async fn resync_once(
    config: &Config,
    provider: Option<crate::core::model::Provider>,
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
    let registry = Registry::build(config)?.with_store(store.clone());
    let mut summaries = Vec::new();
    for mut target in resync::targets(config)? {
        if provider.is_some_and(|p| p != target.provider) || !(tenants.is_empty() || tenants.contains(&target.tenant)) {
            continue;
        }
        if !owners_override.is_empty() {
            target.owners = owners_override.to_vec();
        }
        let summary = resync::resync_tenant(&registry, &inbound, &store, &target, wait)
            .await
            .map_err(|e| anyhow::anyhow!("resync {} {}: {e}", target.provider, target.tenant))?;
        summaries.push(summary);
    }
    drop(inbound);
    stop.cancel();
    let _ = broker_task.await;
    Ok(summaries)
}
