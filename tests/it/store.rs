//! The snapshot store against the real backends: a temporary SQLite file, and a fresh database on
//! the local PostgreSQL for each test (dropped afterwards). Both run the same contract.

use futures_util::FutureExt;
use groupwatch::core::model::{GroupKey, GroupSnapshot, Member, Provider, Replaced, StoredGroup};
use groupwatch::store::coordination::{InstanceInfo, InstanceRow};
use groupwatch::store::{self, OutboxEvent, SnapshotStore, StoreError};
use sqlx::{Connection, PgConnection};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// The contract, run once per backend.

#[tokio::test]
async fn sqlite_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::connect(&sqlite_url(&dir.path().join("snapshots.db"))).await.unwrap();
    contract(store).await;
}

#[tokio::test]
async fn postgres_contract() {
    with_postgres(|url| async move { contract(store::connect(&url).await.unwrap()).await }).await;
}

async fn contract(store: Arc<dyn SnapshotStore>) {
    store.ping().await.expect("ping");

    let key = GroupKey::new(Provider::Wecom, "acme", "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA");
    assert_eq!(store.load(&key).await.unwrap(), None, "a key never saved loads as None");
    assert!(store.chat_ids(Provider::Wecom, "acme").await.unwrap().is_empty());

    // Round trip, exactly: unicode, quotes and newlines, null member fields, extreme integers.
    let first = group(&key.chat_id, "客户群 🎉 «Ünïcode» \"quoted\"\nsecond line", None);
    let stored = save(&store, &key, &first).await.unwrap();
    assert_eq!(stored.revision, 1, "the first save is revision 1");
    assert_eq!(store.load(&key).await.unwrap().as_ref(), Some(&stored));

    // Saving again replaces every field, including clearing or setting the nullable ones.
    let mut second = group(&key.chat_id, "renamed", Some("v2"));
    second.dismissed = true;
    second.snapshot.members.truncate(1);
    second.snapshot.admins.clear();
    second.snapshot.notice = String::new();
    second.last_seq = i64::MAX;
    second.replaced.clear();
    second.checked_at_ms = 1;
    let second = save(&store, &key, &second).await.unwrap();
    assert_eq!(second.revision, 2, "every save bumps the revision");
    assert_eq!(store.load(&key).await.unwrap().as_ref(), Some(&second));

    // Keys are isolated: same chat id under another tenant, another chat under the same tenant.
    let other_tenant = GroupKey::new(Provider::Wecom, "beta", key.chat_id.clone());
    let other_chat = GroupKey::new(Provider::Wecom, "acme", "wr-other");
    assert_eq!(store.load(&other_tenant).await.unwrap(), None);
    let beta = save(&store, &other_tenant, &group(&key.chat_id, "beta's group", Some("b1"))).await.unwrap();
    let other = save(&store, &other_chat, &group("wr-other", "other group", Some("o1"))).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap().as_ref(), Some(&second));
    assert_eq!(store.load(&other_tenant).await.unwrap().as_ref(), Some(&beta));
    assert_eq!(store.load(&other_chat).await.unwrap().as_ref(), Some(&other));

    // chat_ids: per tenant, sorted by bytes (upper case before `_`/`-`... before lower case).
    for id in ["wr_b", "WrZ", "wr-a", "wrA"] {
        save(&store, &GroupKey::new(Provider::Wecom, "acme", id), &group(id, id, None)).await.unwrap();
    }
    let mut expected = vec!["wr_b", "WrZ", "wr-a", "wrA", "wr-other", key.chat_id.as_str()];
    expected.sort();
    assert_eq!(store.chat_ids(Provider::Wecom, "acme").await.unwrap(), expected);
    assert_eq!(store.chat_ids(Provider::Wecom, "beta").await.unwrap(), vec![key.chat_id.clone()]);
    assert!(store.chat_ids(Provider::Wecom, "nobody").await.unwrap().is_empty());

    // A snapshot saved under another chat's key would load as the wrong group: refused.
    let err = save(&store, &other_chat, &first).await.unwrap_err();
    assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
    assert_eq!(store.load(&other_chat).await.unwrap().as_ref(), Some(&other));

    outbox_contract(&store).await;
    coordination_contract(&store).await;
}

/// What instances share: heartbeats, leases that only one holder gets, tokens and pauses.
async fn coordination_contract(store: &Arc<dyn SnapshotStore>) {
    let row = |id: &str, at: i64| InstanceRow {
        instance_id: id.into(),
        started_at_ms: 1,
        heartbeat_at_ms: at,
        worker: true,
        info: InstanceInfo { host: "h".into(), pid: 7, shards: vec![0, 3], calls_per_minute: Default::default() },
    };
    store.heartbeat(&row("a", 1_000)).await.unwrap();
    store.heartbeat(&row("b", 2_000)).await.unwrap();
    store.heartbeat(&row("a", 3_000)).await.unwrap();
    let live = store.instances(2_500).await.unwrap();
    assert_eq!(live, vec![row("a", 3_000)], "a heartbeat refreshes, an old one is not live");
    assert_eq!(store.forget_instances(2_500).await.unwrap(), 1);
    assert_eq!(store.instances(0).await.unwrap().len(), 1);
    store.leave("a").await.unwrap();
    assert!(store.instances(0).await.unwrap().is_empty());

    assert!(store.try_lease("resync:wecom:acme", "a", 10_000, 1_000).await.unwrap());
    assert!(!store.try_lease("resync:wecom:acme", "b", 20_000, 5_000).await.unwrap(), "held by a");
    assert!(store.try_lease("resync:wecom:acme", "a", 20_000, 5_000).await.unwrap(), "its holder renews");
    assert!(store.try_lease("resync:wecom:acme", "b", 30_000, 20_001).await.unwrap(), "expired: b takes it");
    store.release_lease("resync:wecom:acme", "a").await.unwrap();
    assert!(!store.try_lease("resync:wecom:acme", "a", 40_000, 20_002).await.unwrap(), "a cannot release b's");
    store.release_lease("resync:wecom:acme", "b").await.unwrap();
    assert!(store.try_lease("resync:wecom:acme", "a", 40_000, 20_003).await.unwrap(), "released");

    assert_eq!(store.api_token("wecom:corp").await.unwrap(), None);
    store.put_api_token("wecom:corp", "t1", 9_000).await.unwrap();
    store.put_api_token("wecom:corp", "t2", 9_500).await.unwrap();
    assert_eq!(store.api_token("wecom:corp").await.unwrap(), Some(("t2".into(), 9_500)));
    assert_eq!(store.api_token_expiries().await.unwrap(), vec![("wecom:corp".into(), 9_500)]);

    store.pause_api("wecom:corp", 5_000).await.unwrap();
    assert_eq!(store.api_pauses(4_000).await.unwrap(), vec![("wecom:corp".into(), 5_000)]);
    assert!(store.api_pauses(5_000).await.unwrap().is_empty(), "a pause ends");
}

fn event(seq: i64, body: &str) -> OutboxEvent {
    OutboxEvent {
        seq,
        id: format!("00000000-0000-0000-0000-{seq:012}"),
        event_type: "member.join".into(),
        routing_key: "wecom.acme.member.join".into(),
        body: body.into(),
    }
}

/// Snapshot and events commit together, only from the revision loaded; the outbox hands back
/// the unpublished events in order, bodies byte for byte.
async fn outbox_contract(store: &Arc<dyn SnapshotStore>) {
    let key = GroupKey::new(Provider::Wecom, "acme", "wr-outbox");
    let g = group("wr-outbox", "outbox", Some("v1"));
    let body = r#"{"id":"x","name":"客户 \"引号\" 🎉","seq":1}"#;
    let e1 = event(1, body);
    let revision =
        store.commit(&key, &StoredGroup { last_seq: 1, ..g.clone() }, std::slice::from_ref(&e1), &[]).await.unwrap();
    assert_eq!(store.unpublished(&key).await.unwrap(), std::slice::from_ref(&e1));

    // A second writer that loaded the same (absent) state loses, and writes nothing at all.
    let err =
        store.commit(&key, &StoredGroup { last_seq: 1, ..g.clone() }, &[event(1, "other")], &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    // So does one that loaded a revision that is no longer current.
    let from_current = StoredGroup { revision, last_seq: 2, ..g.clone() };
    store.commit(&key, &from_current, &[event(2, "b2")], &[]).await.unwrap();
    let err = store.commit(&key, &from_current, &[event(2, "lost")], &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!((loaded.revision, loaded.last_seq), (revision + 1, 2));
    assert_eq!(store.unpublished(&key).await.unwrap(), [e1.clone(), event(2, "b2")], "in seq order, nothing lost");

    // A failing event insert (seq already used) rolls the snapshot back too.
    let dup = StoredGroup { revision: loaded.revision, last_seq: 3, ..g.clone() };
    assert!(store.commit(&key, &dup, &[event(2, "dup")], &[]).await.is_err());
    assert_eq!(store.load(&key).await.unwrap().unwrap().last_seq, 2, "the snapshot did not move");

    // Stuck events are found; marking publishes up to a seq.
    let stuck = store.chats_with_unpublished(i64::MAX, 100).await.unwrap();
    assert!(stuck.contains(&key), "{stuck:?}");
    assert!(store.chats_with_unpublished(0, 100).await.unwrap().is_empty(), "nothing stored before time 0");
    store.mark_published(&[(key.clone(), 1)], 5).await.unwrap();
    assert_eq!(store.unpublished(&key).await.unwrap(), [event(2, "b2")]);
    // One call marks several chats, each up to its own seq.
    let other = GroupKey::new(Provider::Wecom, "acme", "wr-outbox-2");
    let other_group = StoredGroup { last_seq: 2, ..group("wr-outbox-2", "outbox 2", Some("v1")) };
    store.commit(&other, &other_group, &[event(1, "o1"), event(2, "o2")], &[]).await.unwrap();
    store.mark_published(&[(key.clone(), 2), (other.clone(), 1)], 6).await.unwrap();
    assert!(store.unpublished(&key).await.unwrap().is_empty());
    assert_eq!(store.unpublished(&other).await.unwrap(), [event(2, "o2")], "only through its own seq");
    store.mark_published(&[], 7).await.unwrap();
    store.mark_published(&[(other.clone(), 2)], 7).await.unwrap();
    assert!(!store.chats_with_unpublished(i64::MAX, 100).await.unwrap().contains(&key));
    assert!(!store.chats_with_unpublished(i64::MAX, 100).await.unwrap().contains(&other));

    // Applied items are recorded with their commit, and only then.
    let items = ["item-1".to_owned(), "item-2".to_owned()];
    let current = store.load(&key).await.unwrap().unwrap();
    let next = StoredGroup { revision: current.revision, ..current.clone() };
    store.commit(&key, &next, &[], &items[..1]).await.unwrap();
    assert!(store.commit(&key, &next, &[], &items[1..]).await.is_err(), "a lost race records nothing");
    assert_eq!(store.applied(&key, &items).await.unwrap(), ["item-1"]);
    let other = GroupKey::new(Provider::Wecom, "acme", "wr-elsewhere");
    assert!(store.applied(&other, &items).await.unwrap().is_empty(), "per chat");
    assert_eq!(store.prune_applied(0, 10).await.unwrap(), 0, "nothing recorded before time 0");
    assert_eq!(store.prune_applied(i64::MAX, 10).await.unwrap(), 1);
    assert!(store.applied(&key, &items).await.unwrap().is_empty());

    let progress = store.progress(Provider::Wecom, "acme").await.unwrap();
    let mine = progress.iter().find(|p| p.chat_id == "wr-outbox").expect("listed");
    assert_eq!((mine.last_seq, mine.checked_at_ms), (2, 0));
}

/// A group with a full member, a member whose optional fields are all null, and non-ASCII text.
fn group(chat_id: &str, name: &str, member_version: Option<&str>) -> StoredGroup {
    StoredGroup {
        snapshot: GroupSnapshot {
            chat_id: chat_id.into(),
            name: name.into(),
            owner: "zhangsan".into(),
            notice: "群公告：请勿发广告 📢".into(),
            create_time: 1_572_505_490,
            admins: vec!["lisi".into(), "王五".into()],
            member_version: member_version.map(Into::into),
            members: vec![
                Member {
                    userid: "lisi".into(),
                    member_type: Some(1),
                    unionid: Some("ozynqsulJFCZ2z1aYeS8h-nuasdAAA".into()),
                    join_time: Some(1_572_505_491),
                    join_scene: Some(1),
                    invitor: Some("zhangsan".into()),
                    group_nickname: Some("李四 (管理员)".into()),
                    name: Some("李四".into()),
                    state: Some("klsdup3kj3s1".into()),
                    role: None,
                },
                Member {
                    userid: "wmeDKaCQAAbOXXXXXXXX".into(),
                    member_type: Some(2),
                    unionid: None,
                    join_time: Some(0),
                    join_scene: Some(3),
                    invitor: None,
                    group_nickname: None,
                    name: None,
                    state: None,
                    role: None,
                },
            ],
        },
        dismissed: false,
        updated_at_ms: i64::MAX,
        last_seq: 0,
        revision: 0,
        replaced: vec![Replaced { fingerprint: "v0".into(), at_ms: 1_700_000_000_000 }],
        checked_at_ms: 0,
    }
}

/// Saves as the chat's only writer would, from the revision stored now; returns what `load`
/// must give back afterwards.
async fn save(store: &Arc<dyn SnapshotStore>, key: &GroupKey, group: &StoredGroup) -> Result<StoredGroup, StoreError> {
    let revision = store.load(key).await?.map_or(0, |g| g.revision);
    let group = StoredGroup { revision, ..group.clone() };
    let revision = store.commit(key, &group, &[], &[]).await?;
    Ok(StoredGroup { revision, ..group })
}

// ---------------------------------------------------------------------------------------------
// Backend-specific behaviour.

#[tokio::test]
async fn sqlite_file_is_created_and_keeps_data_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested-name.db");
    let url = sqlite_url(&path);
    let key = GroupKey::new(Provider::Wecom, "acme", "wr1");
    let saved = group("wr1", "persisted", Some("7"));

    let store = store::connect(&url).await.unwrap();
    assert!(path.exists(), "the file is created when missing");
    let saved = save(&store, &key, &saved).await.unwrap();
    drop(store);

    // Reopening runs the migrations again; they must find the schema current and leave data be.
    let store = store::connect(&url).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), Some(saved));
    assert_eq!(store.chat_ids(Provider::Wecom, "acme").await.unwrap(), vec!["wr1".to_owned()]);
}

#[tokio::test]
async fn sqlite_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let _store = store::connect(&sqlite_url(&path)).await.unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&sqlite_url(&path)).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn unreadable_row_is_a_corrupt_error_naming_the_chat() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("corrupt.db"));
    let store = store::connect(&url).await.unwrap();
    let key = GroupKey::new(Provider::Wecom, "acme", "wr-broken");
    save(&store, &key, &group("wr-broken", "g", None)).await.unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE group_snapshots SET members = '[{\"userid\": 1}]'").execute(&mut conn).await.unwrap();

    let err = store.load(&key).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { ref chat_id, .. } if chat_id == "wr-broken"), "{err}");
}

#[tokio::test]
async fn sqlite_relative_url_is_relative_to_the_working_directory() {
    // The default `sqlite://groupwatch.db` must be a file in the working directory, not a host.
    // The test changes no directory (that is process-wide); it checks the file name lands as-is.
    let dir = tempfile::tempdir().unwrap();
    let relative = relative_to_cwd(dir.path());
    let url = format!("sqlite://{relative}/relative.db");
    let _store = store::connect(&url).await.unwrap();
    assert!(dir.path().join("relative.db").exists(), "{url}");
}

/// `target` relative to the current directory, by climbing to the root (`../..`) and back down.
fn relative_to_cwd(target: &std::path::Path) -> String {
    let cwd = std::env::current_dir().unwrap();
    let up = cwd.components().count() - 1;
    let climb = vec![".."; up].join("/");
    format!("{climb}{}", target.display())
}

#[tokio::test]
async fn postgres_migrations_are_idempotent() {
    with_postgres(|url| async move {
        let key = GroupKey::new(Provider::Wecom, "acme", "wr1");
        let saved = save(&store::connect(&url).await.unwrap(), &key, &group("wr1", "persisted", None)).await.unwrap();
        let again = store::connect(&url).await.unwrap();
        assert_eq!(again.load(&key).await.unwrap(), Some(saved));
    })
    .await;
}

#[tokio::test]
async fn bad_urls_are_clear_errors_without_the_password() {
    for url in ["mysql://gw:hunter2@127.0.0.1/gw", "groupwatch.db", ""] {
        let err = store::connect(url).await.err().expect("must fail");
        assert!(matches!(err, StoreError::UnsupportedUrl), "{url}: {err}");
        let shown = err.to_string();
        assert!(shown.contains("sqlite://") && shown.contains("postgres://"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    // Nothing listens on port 1 (the pool retries until its acquire timeout, so this takes ~5 s).
    let err = store::connect("postgres://gw:hunter2@127.0.0.1:1/gw").await.err().expect("must fail");
    let shown = format!("{err} / {err:?}");
    assert!(matches!(err, StoreError::Connect { .. }), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("127.0.0.1:1/gw"), "{shown}");

    // A directory that does not exist cannot hold the SQLite file.
    let err = store::connect("sqlite:///nonexistent-dir-groupwatch/x.db").await.err().expect("must fail");
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Harness.

fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The maintenance database on the local PostgreSQL, where test databases are created.
fn postgres_admin_url() -> String {
    std::env::var("GROUPWATCH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Runs `body` with the URL of a fresh, empty database, and drops the database afterwards, also
/// when `body` panics. PostgreSQL being down fails the test: it is never skipped.
async fn with_postgres<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let admin_url = postgres_admin_url();
    let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
        let mut shown = url::Url::parse(&admin_url).expect("GROUPWATCH_TEST_POSTGRES_URL is a URL");
        let _ = shown.set_password(None);
        panic!(
            "PostgreSQL is unreachable at {shown} ({e}); these tests need it: start it with \
             `bash scripts/services.sh`, or point GROUPWATCH_TEST_POSTGRES_URL at one"
        )
    });
    let name = format!("gwtest_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();

    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&name);
    let outcome = AssertUnwindSafe(body(url.to_string())).catch_unwind().await;

    // FORCE: the store's pool may still hold connections to it.
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
    admin.close().await.ok();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
