//! Who serves what: (provider, tenant) → callback codec, provider → group source and lister.
//! Built once from the configuration; the ingress, the worker and resync look things up here and
//! never name a vendor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::account::Shared;
use super::batch::{BatchPolicy, Batched};
use super::dingtalk::codec::{DingtalkCodec, StreamOnly};
use super::dingtalk::{DingtalkClient, KnownChats};
use super::tim::api::{TimLimits, GROUP_INFO_BATCH};
use super::tim::{TimClient, TimCodec};
use super::wecom::codec::WecomCodec;
use super::wecom::{ApiLimits, WecomClient};
use super::{CallbackCodec, GroupLister, GroupSource};
use crate::config::Config;
use crate::core::model::Provider;

/// A tenant's codec and its number (the replay cache keys by number, not by name).
pub struct Tenant {
    pub number: u32,
    pub codec: Arc<dyn CallbackCodec>,
}

pub struct Registry {
    tenants: HashMap<(Provider, String), Tenant>,
    sources: BTreeMap<Provider, Arc<dyn GroupSource>>,
    listers: BTreeMap<Provider, Arc<dyn GroupLister>>,
    /// The WeCom client, for what only WeCom has (administration, app chats).
    pub wecom: WecomClient,
    pub dingtalk: DingtalkClient,
    /// The Tencent IM client (its accounts join the shared budget).
    pub tim: TimClient,
}

/// When a Tencent IM get_group_info batch is sent: 50 ms after the last fetch joined it, 300 ms
/// after the first at most. A lone fetch costs 50 ms; the default coalescing is 500 ms.
const TIM_BATCH: BatchPolicy = BatchPolicy {
    max: GROUP_INFO_BATCH,
    gap: std::time::Duration::from_millis(50),
    max_wait: std::time::Duration::from_millis(300),
};

#[derive(Debug, thiserror::Error)]
#[error("{provider} tenant {tenant:?}: {reason}")]
pub struct RegistryError {
    provider: Provider,
    tenant: String,
    reason: String,
}

impl Registry {
    /// Codecs, sources and listers for every configured tenant.
    pub fn build(config: &Config) -> Result<Self, RegistryError> {
        let window = Some(config.http.timestamp_window_secs).filter(|w| *w > 0);
        let mut tenants = HashMap::new();
        let mut number = 0u32;
        let mut add = |provider: Provider, tenant: &str, codec: Arc<dyn CallbackCodec>| {
            tenants.insert((provider, tenant.to_owned()), Tenant { number, codec });
            number += 1;
        };
        for t in &config.wecom {
            let codec = WecomCodec::new(t, window).map_err(|e| RegistryError {
                provider: Provider::Wecom,
                tenant: t.tenant.clone(),
                reason: e.to_string(),
            })?;
            add(Provider::Wecom, &t.tenant, Arc::new(codec));
        }
        for t in &config.dingtalk {
            // A stream-mode tenant still needs its place here (the worker takes work only for
            // configured tenants); with no HTTP crypto its callback route refuses everything.
            let codec: Arc<dyn CallbackCodec> = match DingtalkCodec::new(t, window) {
                Ok(codec) => Arc::new(codec),
                Err(e) if t.mode == super::dingtalk::config::Mode::Http => {
                    return Err(RegistryError {
                        provider: Provider::Dingtalk,
                        tenant: t.tenant.clone(),
                        reason: e.to_string(),
                    })
                }
                Err(_) => Arc::new(StreamOnly),
            };
            add(Provider::Dingtalk, &t.tenant, codec);
        }
        for t in &config.tim {
            add(Provider::Tim, &t.tenant, Arc::new(TimCodec::new(t, window)));
        }
        let wecom =
            WecomClient::new(&config.wecom, ApiLimits::of(&config.worker)).with_list_page(config.resync.page_size);
        let mut sources: BTreeMap<Provider, Arc<dyn GroupSource>> = BTreeMap::new();
        let mut listers: BTreeMap<Provider, Arc<dyn GroupLister>> = BTreeMap::new();
        if !config.wecom.is_empty() {
            sources.insert(Provider::Wecom, Arc::new(wecom.clone()));
            listers.insert(Provider::Wecom, Arc::new(wecom.clone()));
        }
        let dingtalk = DingtalkClient::new(&config.dingtalk, ApiLimits::of(&config.worker));
        if !config.dingtalk.is_empty() {
            sources.insert(Provider::Dingtalk, Arc::new(dingtalk.clone()));
        }
        let tim = TimClient::new(&config.tim, TimLimits::of(&config.worker)).with_list_page(config.resync.page_size);
        if !config.tim.is_empty() {
            let source: Arc<dyn GroupSource> = Arc::new(tim.clone());
            sources.insert(Provider::Tim, Arc::new(Batched::new("tim", source, TIM_BATCH)));
            listers.insert(Provider::Tim, Arc::new(tim.clone()));
        }
        Ok(Self { tenants, sources, listers, wecom, dingtalk, tim })
    }

    /// Gives resync a list of groups for the providers that have no listing API (DingTalk): the
    /// chats the store knows. Kept apart from [`Registry::build`] because only the processes
    /// that run resync have a store at hand.
    pub fn with_store(mut self, store: Arc<dyn crate::store::SnapshotStore>) -> Self {
        if self.sources.contains_key(&Provider::Dingtalk) {
            self.listers.insert(Provider::Dingtalk, Arc::new(KnownChats { store }));
        }
        self
    }

    /// Spends every vendor account's budget together with the other instances from now on.
    pub fn join(&self, shared: &Arc<Shared>) {
        for account in self.wecom.accounts().into_iter().chain(self.dingtalk.accounts()).chain(self.tim.accounts()) {
            account.join(shared);
        }
    }

    pub fn tenant(&self, provider: Provider, tenant: &str) -> Option<&Tenant> {
        self.tenants.get(&(provider, tenant.to_owned()))
    }

    /// Every configured (provider, tenant).
    pub fn tenants(&self) -> HashSet<(Provider, String)> {
        self.tenants.keys().cloned().collect()
    }

    pub fn source(&self, provider: Provider) -> Option<&Arc<dyn GroupSource>> {
        self.sources.get(&provider)
    }

    pub fn lister(&self, provider: Provider) -> Option<&Arc<dyn GroupLister>> {
        self.listers.get(&provider)
    }
}
