//! App group chats (`appchat`, seed 004's `ChatInfo`). WeCom sends no callback when an app's
//! group chat changes, so each chat configured in `[[wecom]] appchats` is looked at every
//! `appchat_poll_secs`: a reconcile request goes through the chat's inbound shard like a resync's,
//! the chat's actor fetches it (`appchat/get`, see the WeCom client) and publishes what differs
//! from the stored snapshot. Changes found this way have `occurred_at: null`, the first look is a
//! baseline, and a change is believed once a second read confirms it (`worker.confirm_delay_ms`).

use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::core::clock::now_ms;
use crate::core::model::Provider;
use crate::provider::wecom::config::WecomTenant;
use crate::queue::inbound::{Inbound, InboundEvent, Work};
use crate::worker::cluster::Membership;

/// Polls every tenant's app chats until `stop`, one timer per tenant. The first look is at once,
/// so that the baseline is in place before anything changes. Each poll is a turn (a lease in the
/// store): with several instances, one of them polls each period. A poll the broker did not take
/// gives its turn back, so the next tick (a quarter period later) polls again.
pub async fn poll(inbound: Inbound, tenants: Vec<WecomTenant>, membership: Arc<Membership>, stop: CancellationToken) {
    let tasks = tenants.into_iter().filter(|t| !t.appchats.is_empty()).map(|t| {
        let inbound = inbound.clone();
        let stop = stop.clone();
        let membership = membership.clone();
        async move {
            let period = Duration::from_secs(t.appchat_poll_secs);
            // Asked four times per period, so a dead holder's turn slips by a quarter at most.
            let mut ticks = tokio::time::interval((period / 4).max(Duration::from_millis(200)));
            // A tick missed while the broker was away is not worth two looks in a row.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let turn = format!("appchat:{}", t.tenant);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                if membership.claim_turn(&turn, period).await && !request(&inbound, &t).await {
                    // The next tick asks again, here or elsewhere; nothing is lost but a quarter period.
                    membership.give_back_turn(&turn).await;
                }
            }
        }
    });
    futures_util::future::join_all(tasks).await;
}

/// Queues a reconcile request for each of the tenant's app chats; false if any was not queued.
async fn request(inbound: &Inbound, tenant: &WecomTenant) -> bool {
    let at = now_ms();
    let requests = tenant.appchats.iter().map(|chat| {
        inbound.hand_off(InboundEvent::request(Work::Reconcile, Provider::Wecom, &tenant.tenant, chat, at))
    });
    let failed = futures_util::future::join_all(requests).await.into_iter().filter(Result::is_err).count();
    if failed > 0 {
        tracing::warn!(tenant = %tenant.tenant, failed, "app chat poll could not be queued; trying again at the next tick");
    }
    metrics::counter!("groupwatch_appchat_polls_total").increment((tenant.appchats.len() - failed) as u64);
    failed == 0
}
