//! Other names of chats (DingTalk's `openConversationId`), learned from the notifications that
//! carry both names and used for those that carry only the alias. Stored, so every instance and
//! every restart knows what any one learned; cached, so a chat costs one write per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::core::model::{GroupKey, Provider};
use crate::store::SnapshotStore;

type Key = (Provider, String, String);

pub struct Aliases {
    store: Arc<dyn SnapshotStore>,
    known: Mutex<HashMap<Key, String>>,
}

impl Aliases {
    pub fn new(store: Arc<dyn SnapshotStore>) -> Self {
        Self { store, known: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, key: &Key) -> Option<String> {
        self.known.lock().expect("aliases lock").get(key).cloned()
    }

    /// Records that `alias` names `chat_id`. A store failure is logged and forgotten: the next
    /// notification carrying both names teaches it again.
    pub async fn learn(&self, provider: Provider, tenant: &str, alias: &str, chat_id: &str) {
        let key = (provider, tenant.to_owned(), alias.to_owned());
        if self.cached(&key).as_deref() == Some(chat_id) {
            return;
        }
        match self.store.learn_alias(&GroupKey::new(provider, tenant, chat_id), alias).await {
            Ok(()) => {
                self.known.lock().expect("aliases lock").insert(key, chat_id.to_owned());
            }
            Err(e) => tracing::warn!(%provider, tenant, chat_id, error = %e, "cannot record a chat alias"),
        }
    }

    /// The chat `alias` names, if known.
    pub async fn resolve(&self, provider: Provider, tenant: &str, alias: &str) -> Option<String> {
        let key = (provider, tenant.to_owned(), alias.to_owned());
        if let Some(chat_id) = self.cached(&key) {
            return Some(chat_id);
        }
        match self.store.resolve_alias(provider, tenant, alias).await {
            Ok(Some(chat_id)) => {
                self.known.lock().expect("aliases lock").insert(key, chat_id.clone());
                Some(chat_id)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%provider, tenant, error = %e, "cannot look up a chat alias");
                None
            }
        }
    }
}
