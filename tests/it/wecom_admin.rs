//! `groupwatch wecom …` as a user runs it: the real binary against the simulator over real HTTP
//! (and, for transfers and the stream, the running application on the real RabbitMQ). Each test
//! checks what the user sees (output, exit code), what WeCom would have received (the request
//! bodies the simulator recorded) and, where the stream is involved, the events published.

use crate::common::*;
use groupwatch::core::model::EventType;
use groupwatch::provider::wecom::admin::LocalDay;
use groupwatch::sim::{self, SimClient, SimServer, SimState};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CHAT2: &str = "wrOgQhDgAAcwMTB7YmDkbeBsAAAA";
const CHAT3: &str = "wrOgQhDgAAnZ3jQ2VeOKqD4bXYAAAA";
const APPCHAT: &str = "APPCHAT_ONCALL";

/// What a run of the binary left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The binary with a configuration file of its own.
struct Cli {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Cli {
    fn new(config_toml: &str) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("groupwatch.toml");
        std::fs::write(&config, config_toml).unwrap();
        Cli { _dir: dir, config }
    }

    /// `groupwatch wecom ARGS... --config FILE --tenant acme`.
    async fn run(&self, args: &[&str]) -> Run {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
            .arg("wecom")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .args(["--tenant", TENANT])
            .env_remove("GROUPWATCH_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .await
            .expect("groupwatch runs");
        let run = Run {
            code: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        eprintln!("$ groupwatch wecom {}\n{}{}(exit {})", args.join(" "), run.stdout, run.stderr, run.code);
        run
    }

    async fn json(&self, args: &[&str]) -> Value {
        let run = self.run(args).await;
        assert_eq!(run.code, 0, "{run:?}");
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("--json prints JSON ({e}): {}", run.stdout))
    }
}

/// A configuration whose tenant `acme` calls the simulator (the worker is off: no app runs it).
fn cli_for(api_base: &str) -> Cli {
    let config = test_config(&unique_exchange(), "")
        .replace("api_base = \"http://127.0.0.1:9\"", &format!("api_base = \"{api_base}\""));
    Cli::new(&config)
}

async fn sim_only(state: SimState) -> (SimServer, SimClient, Cli) {
    let server = sim::spawn(state, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let simc = server.client();
    let cli = cli_for(&server.base_url());
    (server, simc, cli)
}

/// The recorded bodies of one API, in order.
async fn bodies(simc: &SimClient, api: &str) -> Vec<Value> {
    simc.requests().await.unwrap().into_iter().filter(|r| r.api == api).map(|r| r.body).collect()
}

fn day(offset: i64) -> LocalDay {
    LocalDay::today().plus(offset)
}

fn group(chat_id: &str, owner: &str, status: i64, created: i64, joins: &[i64]) -> Value {
    let members: Vec<Value> = joins
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"userid": format!("{chat_id}-m{i}"), "type": 2, "join_time": t, "join_scene": 3}))
        .collect();
    json!({"chat_id": chat_id, "name": format!("群 {chat_id}"), "owner": owner, "create_time": created,
           "member_list": members, "status": status})
}

/// [`sim_state`] with three groups, and `extra` merged into its corp.
fn three_chats(extra: Value) -> SimState {
    let mut state = serde_json::to_value(sim_state_with_chats(&[CHAT, CHAT2, CHAT3])).unwrap();
    for (key, value) in extra.as_object().unwrap() {
        state["corps"][0][key] = value.clone();
    }
    serde_json::from_value(state).unwrap()
}

// ---------------------------------------------------------------------------------------------
// transfer
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_partial_failure_exits_1_lists_the_failure_and_publishes_owner_updates_only_for_the_others() {
    let h = Harness::start_with_state(
        TestStore::sqlite().await,
        Default::default(),
        three_chats(json!({})),
        pipeline_config,
    )
    .await;
    // groupwatch knows the three groups (a group it never saw would become a baseline, not an update).
    for (i, chat) in [CHAT, CHAT2, CHAT3].iter().enumerate() {
        h.callback(&callback_xml_for(chat, 1700000000 + i as i64, "create", None, &[], None)).await;
    }
    h.tap.expect(9, WAIT).await;
    // CHAT3's owner has resigned: an in-service transfer of it fails with 90502.
    h.simc.patch_group(CORP_ID, CHAT3, json!({"status": 1})).await.unwrap();
    h.simc.clear_requests().await.unwrap();
    let cli = Cli::new(&h.config);

    let before = groupwatch::core::clock::now_ms() / 1000;
    let run = cli.run(&["transfer", "--new-owner", "abel", CHAT, CHAT2, CHAT3]).await;
    let after = groupwatch::core::clock::now_ms() / 1000;
    assert_eq!(run.code, 1, "a failed chat makes the exit code 1");
    let line = run.stdout.lines().find(|l| l.starts_with(CHAT3)).expect("the failed chat is listed");
    assert!(
        line.contains("failed") && line.contains("90502") && line.contains("the owner of this chat is resigned"),
        "{line}"
    );
    assert!(
        run.stdout.contains("2 of 3 groups transferred to abel (groupchat/onjob_transfer); 1 failed."),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Owner changes queued for the stream: 2."), "{}", run.stdout);
    assert_eq!(
        bodies(&h.simc, "externalcontact/groupchat/onjob_transfer").await,
        [json!({"chat_id_list": [CHAT, CHAT2, CHAT3], "new_owner": "abel"})]
    );

    // No callback is sent: the owner changes reach the stream through the transfer itself.
    let events = h.tap.expect(2, WAIT).await;
    let chats: BTreeSet<&str> = events.iter().map(|e| e.chat_id.as_str()).collect();
    assert_eq!(chats, BTreeSet::from([CHAT, CHAT2]), "nothing for the chat that failed");
    for e in &events {
        assert_eq!(e.event_type, EventType::GroupUpdate);
        assert_eq!(e.changes.as_deref(), Some(&["owner".to_string()][..]));
        assert_eq!(e.group.owner, "abel");
        let at = e.occurred_at.expect("the transfer's time");
        assert!((before..=after).contains(&at), "{at} within {before}..={after}");
    }
    assert!(h.tap.collect(Duration::from_secs(1)).await.is_empty(), "still nothing for {CHAT3}");

    // Then the resigned owner's group, through groupchat/transfer.
    let run = cli.run(&["transfer", "--resigned", "--new-owner", "sam", CHAT3, "--json"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let answer: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(answer["transferred"], json!([CHAT3]));
    assert_eq!((answer["failed"].clone(), answer["queued"].clone()), (json!([]), json!(1)));
    assert_eq!(
        bodies(&h.simc, "externalcontact/groupchat/transfer").await,
        [json!({"chat_id_list": [CHAT3], "new_owner": "sam"})]
    );
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!((events[0].chat_id.as_str(), events[0].group.owner.as_str()), (CHAT3, "sam"));
    h.finish().await;
}

#[tokio::test]
async fn transfer_refuses_bad_usage_with_exit_2_before_any_call() {
    let (_server, simc, cli) = sim_only(three_chats(json!({}))).await;
    let many: Vec<String> = (0..101).map(|i| format!("wrChat{i}")).collect();
    let mut too_many = vec!["transfer", "--new-owner", "abel"];
    too_many.extend(many.iter().map(String::as_str));
    for (args, says) in [
        (too_many, "CHAT: needs 1 to 100 entries, got 101"),
        (
            vec!["transfer", "--new-owner", "abel", CHAT, CHAT],
            "CHAT: \"wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA\" is given twice",
        ),
        (vec!["transfer", "--new-owner", "", CHAT], "--new-owner: must not be empty"),
        (vec!["transfer", "--new-owner", "abel"], "<CHAT>..."),
    ] {
        let run = cli.run(&args).await;
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains(says), "{says:?} in {}", run.stderr);
        assert!(run.stdout.is_empty());
    }
    let unknown =
        Cli::new(&std::fs::read_to_string(&cli.config).unwrap().replace("tenant = \"acme\"", "tenant = \"other\""));
    let run = unknown.run(&["transfer", "--new-owner", "abel", CHAT]).await;
    assert_eq!(
        (run.code, run.stderr.trim()),
        (2, "groupwatch: --tenant: \"acme\" is not a configured [[wecom]] tenant")
    );
    assert!(simc.requests().await.unwrap().is_empty(), "nothing was called");
    assert_eq!(simc.stats().await.unwrap().gettoken, 0);
}

#[tokio::test]
async fn transfer_without_rabbitmq_transfers_nothing() {
    let (_server, simc, cli) = sim_only(three_chats(json!({}))).await;
    let closed = format!("amqp://guest:guest@127.0.0.1:{}/%2f", serve::free_port());
    let config = std::fs::read_to_string(&cli.config).unwrap().replace(&amqp_url(), &closed);
    let run = Cli::new(&config).run(&["transfer", "--new-owner", "abel", CHAT]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("cannot reach RabbitMQ at amqp.url; nothing was transferred"), "{}", run.stderr);
    assert!(simc.requests().await.unwrap().is_empty());
    assert_eq!(simc.state().await.unwrap().corps[0].groups[0].owner, "ZhuShengBen");
}

// ---------------------------------------------------------------------------------------------
// join-way
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn join_way_add_get_update_delete_round_trip() {
    let (_server, simc, cli) = sim_only(three_chats(json!({}))).await;
    let run = cli
        .run(&[
            "join-way",
            "add",
            "--scene",
            "2",
            "--remark",
            "春季活动",
            "--auto-create-room",
            "1",
            "--room-base-name",
            "销售客服群",
            "--room-base-id",
            "10",
            "--state",
            "spring-2024",
            CHAT,
            CHAT2,
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    let config_id = run.stdout.trim().strip_prefix("config_id: ").expect("prints the config_id").to_owned();
    assert_eq!(
        bodies(&simc, "externalcontact/groupchat/add_join_way").await,
        [json!({"scene": 2, "remark": "春季活动", "auto_create_room": 1, "room_base_name": "销售客服群",
                "room_base_id": 10, "chat_id_list": [CHAT, CHAT2], "state": "spring-2024"})]
    );

    let way = cli.json(&["join-way", "get", &config_id, "--json"]).await;
    assert_eq!(way["config_id"], config_id.as_str());
    assert_eq!((way["scene"].clone(), way["state"].clone()), (json!(2), json!("spring-2024")));
    assert_eq!(way["chat_id_list"], json!([CHAT, CHAT2]));
    assert!(way["qr_code"].as_str().is_some_and(|u| u.starts_with("https://")));
    let table = cli.run(&["join-way", "get", &config_id]).await;
    assert!(
        table.stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["state", "spring-2024"]),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("2 (QR code)"));
    assert_eq!(bodies(&simc, "externalcontact/groupchat/get_join_way").await[0], json!({"config_id": config_id}));

    let run = cli.run(&["join-way", "update", &config_id, "--scene", "1", "--state", "autumn", CHAT3]).await;
    assert_eq!((run.code, run.stdout.trim()), (0, format!("join way {config_id} updated").as_str()));
    assert_eq!(
        bodies(&simc, "externalcontact/groupchat/update_join_way").await,
        [json!({"config_id": config_id, "scene": 1, "chat_id_list": [CHAT3], "state": "autumn"})]
    );
    let way = cli.json(&["join-way", "get", &config_id, "--json"]).await;
    assert_eq!(
        way,
        json!({"config_id": config_id, "scene": 1, "remark": null, "auto_create_room": 1, "room_base_name": null,
               "room_base_id": null, "chat_id_list": [CHAT3], "qr_code": null, "state": "autumn"}),
        "an update replaces every field"
    );

    let run = cli.run(&["join-way", "delete", &config_id]).await;
    assert_eq!((run.code, run.stdout.trim()), (0, format!("join way {config_id} deleted").as_str()));
    assert_eq!(bodies(&simc, "externalcontact/groupchat/del_join_way").await, [json!({"config_id": config_id})]);
    let run = cli.run(&["join-way", "get", &config_id]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr.trim(), "groupwatch: groupchat/get_join_way failed: errcode 40058: invalid config_id");
}

#[tokio::test]
async fn join_way_refuses_what_wecom_would_refuse_before_calling_it() {
    let (_server, simc, cli) = sim_only(three_chats(json!({}))).await;
    let thirty_one = "渠".repeat(31);
    for (args, says) in [
        (
            vec!["join-way", "add", "--scene", "2", "--state", &thirty_one, CHAT],
            "--state: at most 30 characters, got 31",
        ),
        (vec!["join-way", "add", "--scene", "2", "a", "b", "c", "d", "e", "f"], "CHAT: needs 1 to 5 entries, got 6"),
        (vec!["join-way", "add", "--scene", "3", CHAT], "invalid value '3' for '--scene <SCENE>'"),
        (
            vec!["join-way", "add", "--scene", "2", "--auto-create-room", "0", "--room-base-id", "3", CHAT],
            "--room-base-id: only applies when auto_create_room is 1",
        ),
        (vec!["join-way", "update", "--scene", "2", CHAT], "<CHAT>..."),
    ] {
        let run = cli.run(&args).await;
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains(says), "{says:?} in {}", run.stderr);
        if run.stderr.starts_with("groupwatch: ") {
            assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
        }
    }
    assert!(simc.requests().await.unwrap().is_empty(), "nothing was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_came_through_a_join_way_joins_with_its_state() {
    let h = Harness::start(TestStore::sqlite().await).await;
    h.created().await;
    let cli = Cli::new(&h.config);
    let run = cli.run(&["join-way", "add", "--scene", "2", "--state", "spring-2024", CHAT]).await;
    let config_id = run.stdout.trim().strip_prefix("config_id: ").unwrap().to_owned();

    let (chat, version) = h
        .simc
        .join_via_join_way(CORP_ID, &config_id, json!({"userid": "wmSpring", "join_time": 1700000500, "name": "客户"}))
        .await
        .unwrap();
    assert_eq!(chat, CHAT);
    h.callback(&callback_xml(1700000501, "update", Some("add_member"), &["wmSpring"], Some(&version))).await;
    let joined = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&joined), [(EventType::MemberJoin, Some("wmSpring"), Some(1700000501))]);
    let member = joined[0].member.as_ref().unwrap();
    assert_eq!(member.state.as_deref(), Some("spring-2024"));
    assert_eq!(member.join_scene, Some(3), "through the QR code");

    // Someone added directly has no state, and one leaving keeps the state they joined with.
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmDirect", 1700000600)).await.unwrap();
    h.callback(&callback_xml(1700000601, "update", Some("add_member"), &["wmDirect"], Some(&v))).await;
    assert_eq!(h.tap.expect(1, WAIT).await[0].member.as_ref().unwrap().state, None);
    let v = h.simc.remove_member(CORP_ID, CHAT, "wmSpring").await.unwrap();
    h.callback(&callback_xml(1700000700, "update", Some("del_member"), &["wmSpring"], Some(&v))).await;
    let left = h.tap.expect(1, WAIT).await;
    assert_eq!(left[0].event_type, EventType::MemberLeave);
    assert_eq!(left[0].member.as_ref().unwrap().state.as_deref(), Some("spring-2024"));
    h.finish().await;
}

// ---------------------------------------------------------------------------------------------
// groups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn groups_status_resigned_lists_exactly_the_simulators_status_1_groups() {
    let state = json!({"groups": [
        group("wrA", "abel", 0, 1600000000, &[1600000000]),
        group("wrB", "jack", 1, 1600000000, &[1600000000]),
        group("wrC", "jack", 1, 1600000000, &[1600000000]),
        group("wrD", "lucy", 1, 1600000000, &[1600000000]),
        group("wrE", "mike", 2, 1600000000, &[1600000000]),
        group("wrF", "mike", 3, 1600000000, &[1600000000]),
    ]});
    let (_server, simc, cli) = sim_only(three_chats(state)).await;
    simc.patch_group(CORP_ID, "wrA", json!({"status": 1})).await.unwrap();
    let expected: BTreeSet<String> = simc.state().await.unwrap().corps[0]
        .groups
        .iter()
        .filter(|g| g.status == 1 && !g.dismissed)
        .map(|g| g.chat_id.clone())
        .collect();
    assert_eq!(expected.len(), 4);

    let listed = cli.json(&["groups", "--status", "resigned", "--json"]).await;
    let listed: Vec<(String, i64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["chat_id"].as_str().unwrap().to_owned(), g["status"].as_i64().unwrap()))
        .collect();
    assert!(listed.iter().all(|(_, status)| *status == 1), "{listed:?}");
    assert_eq!(listed.iter().map(|(c, _)| c.clone()).collect::<BTreeSet<_>>(), expected);
    assert_eq!(listed.len(), expected.len(), "each once");
    assert_eq!(
        bodies(&simc, "externalcontact/groupchat/list").await,
        [json!({"status_filter": 1, "cursor": "", "limit": 1000})]
    );

    let run = cli.run(&["groups", "--status", "resigned", "--owner", "jack"]).await;
    assert_eq!(run.code, 0);
    let rows: Vec<Vec<&str>> = run.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["CHAT", "STATUS"],
            vec!["wrB", "1", "owner", "resigned"],
            vec!["wrC", "1", "owner", "resigned"],
            vec!["2", "groups", "(owner", "resigned)"],
        ]
    );
    assert_eq!(
        bodies(&simc, "externalcontact/groupchat/list").await[1],
        json!({"status_filter": 1, "cursor": "", "limit": 1000, "owner_filter": {"userid_list": ["jack"]}})
    );
    let statuses = |v: Value| v.as_array().unwrap().iter().map(|g| g["status"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(statuses(cli.json(&["groups", "--status", "inheriting", "--json"]).await), [2]);
    assert_eq!(statuses(cli.json(&["groups", "--status", "inherited", "--json"]).await), [3]);
    assert_eq!(statuses(cli.json(&["groups", "--status", "all", "--json"]).await), [1, 1, 1, 1, 2, 3]);
    let run = cli.run(&["groups", "--status", "retired"]).await;
    assert_eq!(run.code, 2);
}

// ---------------------------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------------------------

/// Owners abel and jack with groups created and joined on known days before today.
fn stats_state() -> SimState {
    let t = |offset: i64, secs: i64| day(offset).midnight() + secs;
    three_chats(json!({"groups": [
        group("wrAbelOld", "abel", 0, t(-10, 0), &[t(-10, 0), t(-3, 100), t(-2, 5)]),
        group("wrAbelNew", "abel", 0, t(-3, 3600), &[t(-3, 3600), t(-1, 7)]),
        group("wrJack", "jack", 0, t(-20, 0), &[t(-20, 0), t(-2, 99), t(-2, 3000)]),
        group("wrLucy", "lucy", 0, t(-2, 0), &[t(-2, 0)]),
    ]}))
}

#[tokio::test]
async fn stats_by_owner_and_by_day_equal_what_the_simulator_computed() {
    let (server, simc, cli) = sim_only(stats_state()).await;
    let (from, to) = (day(-3).to_string(), day(-1).to_string());

    let by_owner = cli
        .json(&["stats", "--by", "owner", "--from", &from, "--to", &to, "--owner", "abel", "--owner", "jack", "--json"])
        .await;
    let sent = bodies(&simc, "externalcontact/groupchat/statistic").await;
    assert_eq!(
        sent,
        [json!({"day_begin_time": day(-3).midnight(), "day_end_time": day(-1).midnight(),
                "owner_filter": {"userid_list": ["abel", "jack"]}, "offset": 0, "limit": 1000})]
    );
    // What the simulator computes from its groups, asked directly with the same body.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let token: Value = http
        .get(format!("{}/cgi-bin/gettoken", server.base_url()))
        .query(&[("corpid", CORP_ID), ("corpsecret", "test-secret")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ask = |api: &'static str, body: Value| {
        let (http, token, base) = (&http, token["access_token"].as_str().unwrap().to_owned(), server.base_url());
        async move {
            let url = format!("{base}/cgi-bin/externalcontact/groupchat/{api}");
            http.post(url)
                .query(&[("access_token", token)])
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let direct = ask("statistic", sent[0].clone()).await;
    assert_eq!(by_owner["items"], direct["items"], "the CLI shows what WeCom answered");
    // And by hand: abel 2 groups (1 new), 5 members (4 new in the range); jack 1 group, 3 members (2 new).
    let figures = |item: &Value| {
        let d = &item["data"];
        [&d["new_chat_cnt"], &d["chat_total"], &d["new_member_cnt"], &d["member_total"]].map(|v| v.as_i64().unwrap())
    };
    assert_eq!(by_owner["items"][0]["owner"], "abel");
    assert_eq!(figures(&by_owner["items"][0]), [1, 2, 4, 5]);
    assert_eq!(by_owner["items"][1]["owner"], "jack");
    assert_eq!(figures(&by_owner["items"][1]), [0, 1, 2, 3]);
    assert_eq!(by_owner["items"].as_array().unwrap().len(), 2, "lucy was not asked for");

    let run = cli.run(&["stats", "--by", "day", "--from", &from, "--to", &to, "--csv"]).await;
    assert_eq!(run.code, 0);
    assert_eq!(
        bodies(&simc, "externalcontact/groupchat/statistic_group_by_day").await,
        [json!({"day_begin_time": day(-3).midnight(), "day_end_time": day(-1).midnight()})],
        "no owner given and none configured: no filter"
    );
    let direct = ask(
        "statistic_group_by_day",
        json!({"day_begin_time": day(-3).midnight(), "day_end_time": day(-1).midnight()}),
    )
    .await;
    let mut expected_csv =
        "day,stat_time,new_chat_cnt,chat_total,chat_has_msg,new_member_cnt,member_total,member_has_msg,msg_total\n"
            .to_owned();
    for item in direct["items"].as_array().unwrap() {
        let d = &item["data"];
        let t = item["stat_time"].as_i64().unwrap();
        let values: Vec<String> = [
            "new_chat_cnt",
            "chat_total",
            "chat_has_msg",
            "new_member_cnt",
            "member_total",
            "member_has_msg",
            "msg_total",
        ]
        .iter()
        .map(|k| d[*k].to_string())
        .collect();
        expected_csv += &format!("{},{t},{}\n", LocalDay::of_unix(t), values.join(","));
    }
    assert_eq!(run.stdout, expected_csv);
    // By hand, day -2: lucy's group is new (4 in all), 4 joins (abel 1, jack 2, lucy 1), 8 members
    // by its end (wrAbelNew's second member joins on day -1).
    let day_minus_2 = run.stdout.lines().nth(2).unwrap();
    assert_eq!(day_minus_2, format!("{},{},1,4,0,4,8,0,0", day(-2), day(-2).midnight()));

    let table = cli.run(&["stats", "--by", "day", "--from", &from, "--to", &to]).await;
    let header: Vec<&str> = table.stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["DAY", "NEW_GROUPS", "GROUPS", "GROUPS_WITH_MSGS", "NEW_MEMBERS", "MEMBERS", "MEMBERS_WITH_MSGS", "MESSAGES"]
    );
    assert!(table.stdout.ends_with(&format!("{from} to {to} (UTC+8), 3 rows\n")), "{}", table.stdout);
}

#[tokio::test]
async fn stats_refuse_ranges_wecom_does_not_serve_before_calling_it() {
    let (_server, simc, cli) = sim_only(stats_state()).await;
    let today = day(0).to_string();
    let (d40, d9, d1, d2) = (day(-40).to_string(), day(-9).to_string(), day(-1).to_string(), day(-2).to_string());
    for (from, to, says) in [
        (d1.as_str(), today.as_str(), "--to: "),
        (d40.as_str(), d9.as_str(), "spans 31 days; WeCom allows at most 30"),
        (d1.as_str(), d2.as_str(), "is before"),
        ("2023-02-29", d1.as_str(), "is not a date"),
    ] {
        let run = cli.run(&["stats", "--by", "owner", "--from", from, "--to", to]).await;
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains(says), "{says:?} in {}", run.stderr);
    }
    let run = cli.run(&["stats", "--by", "owner", "--from", &d2, "--to", &d1, "--csv", "--json"]).await;
    assert_eq!(run.code, 2, "--csv and --json exclude each other");
    assert!(simc.requests().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// App group chats
// ---------------------------------------------------------------------------------------------

const POLL: Duration = Duration::from_secs(2);
const CONFIRM: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_chat_member_added_in_the_simulator_is_published_within_one_poll_interval() {
    let state = three_chats(
        json!({"appchats": [{"chatid": APPCHAT, "name": "值班群", "owner": "abel", "userlist": ["abel", "jack"]}]}),
    );
    let h =
        Harness::start_with_state(TestStore::sqlite().await, Default::default(), state, |exchange, store, api_base| {
            // confirm_delay_ms is 300 in pipeline_config (CONFIRM).
            with_appchat(pipeline_config(exchange, store, api_base), api_base, POLL)
        })
        .await;
    // The first look (at start-up) is a baseline: the chat's members as they are, no events.
    wait_for_appchat_polls(&h.simc, 1).await;
    assert!(h.tap.collect(POLL).await.is_empty(), "a baseline publishes nothing");
    let polls = wait_for_appchat_polls(&h.simc, 2).await;
    assert_eq!(bodies(&h.simc, "appchat/get").await[0], json!({"chatid": APPCHAT}));

    h.simc.add_appchat_member(CORP_ID, APPCHAT, "lucy").await.unwrap();
    let added = Instant::now();
    let events = h.tap.expect(1, POLL + CONFIRM + Duration::from_secs(2)).await;
    let took = added.elapsed();
    // The next poll sees it; a second read, the confirmation delay later, confirms it.
    assert!(took <= POLL + CONFIRM + Duration::from_millis(1500), "published {took:?} after the change");
    let e = &events[0];
    assert_eq!(kinds(&events), [(EventType::MemberJoin, Some("lucy"), None)]);
    assert_eq!((e.provider.as_str(), e.chat_id.as_str(), e.tenant.as_str()), ("wecom", APPCHAT, TENANT));
    assert_eq!((e.group.name.as_str(), e.group.owner.as_str(), e.group.member_count), ("值班群", "abel", 3));
    assert_eq!(e.group.member_version, None);
    let member = e.member.as_ref().unwrap();
    assert_eq!((member.member_type, member.join_time, member.state.as_deref()), (None, None, None), "only a userid");
    assert!(wait_for_appchat_polls(&h.simc, polls + 1).await > polls);

    h.simc.remove_appchat_member(CORP_ID, APPCHAT, "jack").await.unwrap();
    let left = h.tap.expect(1, POLL + CONFIRM + Duration::from_secs(2)).await;
    assert_eq!(kinds(&left), [(EventType::MemberLeave, Some("jack"), None)]);
    h.finish().await;
}

/// A poll the broker did not take gives its turn back, so the next tick (a quarter period later)
/// polls again instead of the next period. Here the broker is out of reach when the first look,
/// at start-up, is handed off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_chat_poll_the_broker_did_not_take_is_tried_again_at_the_next_tick() {
    const PERIOD: Duration = Duration::from_secs(8);
    let state = three_chats(
        json!({"appchats": [{"chatid": APPCHAT, "name": "值班群", "owner": "abel", "userlist": ["abel", "jack"]}]}),
    );
    let sim = sim::spawn(state, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let simc = SimClient::new(sim.base_url());
    let proxy = crate::common::proxy::Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    proxy.cut();
    let exchange = unique_exchange();
    let store = TestStore::sqlite().await;
    let api_base = sim.base_url();
    let config = with_appchat(
        pipeline_test_config(&exchange, &store, &api_base).amqp_url(&proxy.amqp_url()).toml(),
        &api_base,
        PERIOD,
    );
    let app = spawn_app_with(&config, false).await;
    let started = Instant::now();
    // The first tick comes at once and finds no broker; the broker is back well before the next.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(proxy.refused() > 0, "the app tried the broker while it was out of reach");
    assert!(bodies(&simc, "appchat/get").await.is_empty(), "nothing polled without a broker");
    proxy.restore();
    wait_for_appchat_polls(&simc, 1).await;
    let took = started.elapsed();
    assert!(took < PERIOD * 3 / 4, "the first look came {took:?} after start; the next tick is {:?} later", PERIOD / 4);
    let topology = app.topology.clone();
    app.stop().await;
    cleanup(&amqp().await, &topology).await;
}

/// `config` with [`APPCHAT`] as the tenant's app chat, looked at every `poll`.
fn with_appchat(config: String, api_base: &str, poll: Duration) -> String {
    config.replace(
        &format!("api_base = \"{api_base}\""),
        &format!("api_base = \"{api_base}\"\nappchats = [\"{APPCHAT}\"]\nappchat_poll_secs = {}", poll.as_secs()),
    )
}

/// Waits until the simulator has answered at least `n` appchat/get calls; returns how many.
async fn wait_for_appchat_polls(simc: &SimClient, n: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let polls = bodies(simc, "appchat/get").await.len();
        if polls >= n {
            return polls;
        }
        assert!(Instant::now() < deadline, "only {polls} appchat/get calls after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wecom_help_lists_the_commands_and_the_exit_codes() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
        .args(["wecom", "--help"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for command in ["transfer", "join-way", "groups", "stats"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "{command} in\n{help}");
    }
    assert!(help.contains("Exit codes: 0 done; 1 something failed"), "{help}");
    for sub in [&["transfer"][..], &["join-way", "add"], &["join-way", "update"], &["groups"], &["stats"]] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
            .arg("wecom")
            .args(sub)
            .arg("--help")
            .output()
            .await
            .unwrap();
        let help = String::from_utf8(output.stdout).unwrap();
        assert!(help.contains("--config") && help.contains("--tenant") && help.contains("--json"), "{sub:?}:\n{help}");
    }
}
