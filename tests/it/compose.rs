//! `docker-compose.yml` and `Dockerfile` checked without a Docker engine: the services the docs
//! promise exist, their `GROUPWATCH__…` variables name real config keys with values the real
//! config loader accepts, the trial setup publishes nothing beyond loopback and has no guest
//! user, and the image is a multi-stage build that runs as a non-root user.

use groupwatch::config::Config;
use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CONFIG_PATH: &str = "/etc/groupwatch/groupwatch.toml";

/// The configuration keys of `src/config.rs`, section by section (`wecom` entries are addressed
/// by tenant name or index, then a key). `every_allowed_key_exists_in_config_rs` keeps this honest.
const KEYS: &[(&str, &[&str])] = &[
    (
        "http",
        &[
            "enabled",
            "listen",
            "max_body_bytes",
            "request_timeout_ms",
            "timestamp_window_secs",
            "allow_replay",
            "replay_cache_entries",
            "max_connections",
            "shutdown_grace_ms",
            "ops_listen",
            "ops_on_callback_listener",
        ],
    ),
    (
        "worker",
        &[
            "enabled",
            "coalesce_ms",
            "retry_delays_ms",
            "prefetch",
            "api_timeout_ms",
            "api_rate_per_minute",
            "api_concurrency",
            "api_rate_limit_pause_ms",
            "dedupe_window_secs",
        ],
    ),
    ("amqp", &["url", "exchange", "declare_default_queues", "confirm_timeout_ms", "inbound_shards"]),
    ("store", &["url", "history_days"]),
    ("api", &["tokens"]),
    ("log", &["format", "level"]),
];
const WECOM_KEYS: &[&str] = &[
    "tenant",
    "corp_id",
    "token",
    "encoding_aes_key",
    "secret",
    "api_base",
    "receive_id",
    "allow_documented_test_key",
];

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn compose() -> Value {
    let mut doc: Value = serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    doc.apply_merge().expect("merge keys resolve"); // `<<: *anchor`, as Compose does
    doc
}

fn services(doc: &Value) -> BTreeMap<String, Value> {
    doc["services"]
        .as_mapping()
        .expect("services is a mapping")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| format!("{x:?}"))).collect())
        .unwrap_or_default()
}

fn profiles(service: &Value) -> Vec<String> {
    strings(&service["profiles"])
}

/// `(host, container)` ports from the short syntax (`"8080:8080"`, `"127.0.0.1:8080:8080/tcp"`)
/// and the long one (`{target, published}`).
fn published_ports(service: &Value) -> Vec<(u16, u16)> {
    let Some(ports) = service["ports"].as_sequence() else { return Vec::new() };
    ports
        .iter()
        .map(|p| match p {
            Value::String(s) => {
                let s = s.split('/').next().unwrap();
                let parts: Vec<&str> = s.rsplitn(3, ':').collect();
                assert!(parts.len() >= 2, "port {s:?} is not published on the host");
                (parts[1].parse().expect("host port"), parts[0].parse().expect("container port"))
            }
            Value::Mapping(_) => {
                let n = |v: &Value| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap() as u16;
                (n(&p["published"]), n(&p["target"]))
            }
            other => panic!("unexpected port entry {other:?}"),
        })
        .collect()
}

/// `${NAME:-default}` and `${NAME}` replaced as Compose does with NAME unset.
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The environment as a map, from either the mapping or the `KEY=VALUE` list syntax, with
/// `${…}` interpolated as with nothing set.
fn environment(service: &Value) -> BTreeMap<String, String> {
    raw_environment(service).into_iter().map(|(k, v)| (k, interpolate(&v))).collect()
}

/// The environment as written, `${…}` and all.
fn raw_environment(service: &Value) -> BTreeMap<String, String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("environment value {other:?}"),
    };
    match &service["environment"] {
        Value::Mapping(m) => m.iter().map(|(k, v)| (k.as_str().unwrap().to_owned(), scalar(v))).collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                let (k, v) = i.as_str().unwrap().split_once('=').expect("KEY=VALUE");
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("environment {other:?}"),
    }
}

fn builds_from_repo(service: &Value) -> bool {
    match &service["build"] {
        Value::String(s) => s == ".",
        Value::Mapping(_) => service["build"]["context"].as_str() == Some("."),
        _ => false,
    }
}

/// The services that run groupwatch: those built from this repository's Dockerfile.
fn groupwatch_services(doc: &Value) -> BTreeMap<String, Value> {
    services(doc).into_iter().filter(|(_, s)| builds_from_repo(s)).collect()
}

#[test]
fn rabbitmq_with_management_ui_and_healthcheck() {
    let services = services(&compose());
    let rabbit = services.get("rabbitmq").expect("a rabbitmq service");
    assert!(rabbit["image"].as_str().unwrap().contains("management"), "the image has the management UI");
    let containers: BTreeSet<u16> = published_ports(rabbit).into_iter().map(|(_, c)| c).collect();
    assert!(containers.contains(&5672) && containers.contains(&15672), "publishes 5672 and 15672: {containers:?}");
    assert!(!strings(&rabbit["healthcheck"]["test"]).is_empty(), "rabbitmq has a healthcheck");
    assert!(profiles(rabbit).is_empty(), "rabbitmq runs in every profile");
}

/// The host side of every published port, `None` when it listens on every interface.
fn published_host_ips(service: &Value) -> Vec<Option<String>> {
    let Some(ports) = service["ports"].as_sequence() else { return Vec::new() };
    ports
        .iter()
        .map(|p| match p {
            Value::String(s) => {
                let parts: Vec<&str> = s.split('/').next().unwrap().rsplitn(3, ':').collect();
                parts.get(2).map(|ip| ip.to_string())
            }
            Value::Mapping(_) => p["host_ip"].as_str().map(str::to_owned),
            other => panic!("unexpected port entry {other:?}"),
        })
        .collect()
}

/// A trial setup on someone's laptop or a cloud VM must not open RabbitMQ (or anything else) to
/// the network: every published port is bound to 127.0.0.1.
#[test]
fn published_ports_are_bound_to_loopback() {
    let services = services(&compose());
    assert!(!published_ports(&services["rabbitmq"]).is_empty());
    for (name, s) in &services {
        for ip in published_host_ips(s) {
            assert_eq!(ip.as_deref(), Some("127.0.0.1"), "{name} publishes a port beyond loopback");
        }
    }
}

/// RabbitMQ runs with a user created from RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS, never
/// guest/guest, and every groupwatch service connects with that user.
#[test]
fn rabbitmq_user_comes_from_the_environment_and_is_not_guest() {
    assert!(!read("docker-compose.yml").contains("guest"), "docker-compose.yml mentions guest");
    let doc = compose();
    let services = services(&doc);
    let raw = raw_environment(&services["rabbitmq"]);
    for var in ["RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"] {
        let from_env = raw.get(var).is_some_and(|v| v.starts_with(&format!("${{{var}")));
        assert!(from_env, "{var} comes from the environment: {raw:?}");
    }
    let env = environment(&services["rabbitmq"]);
    let (user, pass) = (&env["RABBITMQ_DEFAULT_USER"], &env["RABBITMQ_DEFAULT_PASS"]);
    assert!(!user.is_empty() && user != "guest", "{user}");
    assert!(pass.contains("trial"), "the default password says it is for a trial: {pass}");
    for (name, s) in groupwatch_services(&doc) {
        let url = url::Url::parse(&environment(&s)["GROUPWATCH__AMQP__URL"]).unwrap();
        assert_eq!(url.host_str(), Some("rabbitmq"), "{name}");
        assert_eq!((url.username(), url.password()), (user.as_str(), Some(pass.as_str())), "{name}");
    }
}

#[test]
fn groupwatch_builds_from_the_repo_and_publishes_a_port() {
    let doc = compose();
    let services = services(&doc);
    let gw = services.get("groupwatch").expect("a groupwatch service");
    assert!(builds_from_repo(gw), "groupwatch builds from .");
    assert!(profiles(gw).is_empty(), "the default groupwatch runs without a profile");
    assert!(published_ports(gw).iter().any(|(_, c)| *c == 8080), "publishes the HTTP port");
    assert_eq!(gw["depends_on"]["rabbitmq"]["condition"].as_str(), Some("service_healthy"));

    for (name, s) in groupwatch_services(&doc) {
        let command = strings(&s["command"]);
        assert_eq!(command.first().map(String::as_str), Some("serve"), "{name}: runs serve");
        let config = command.iter().position(|a| a == "--config").map(|i| command[i + 1].as_str());
        assert_eq!(config, Some(CONFIG_PATH), "{name}: --config");
        let mounts = strings(&s["volumes"]);
        assert!(mounts.iter().any(|m| m.split(':').nth(1) == Some(CONFIG_PATH)), "{name}: mounts the config");
        assert_eq!(
            environment(&s).get("GROUPWATCH__HTTP__LISTEN").map(String::as_str),
            Some("0.0.0.0:8080"),
            "{name}: listens on all interfaces inside the container"
        );
        // The ops listener too, or its loopback default would be unreachable from the host; it is
        // published on the host's loopback only (published_ports_are_bound_to_loopback).
        assert_eq!(
            environment(&s).get("GROUPWATCH__HTTP__OPS_LISTEN").map(String::as_str),
            Some("0.0.0.0:9464"),
            "{name}: the ops listener inside the container"
        );
        assert!(published_ports(&s).iter().any(|(_, c)| *c == 9464), "{name}: publishes the ops port");
    }
}

#[test]
fn postgres_profile_has_a_database_and_several_instances() {
    let doc = compose();
    let services = services(&doc);
    let pg = services.get("postgres").expect("a postgres service");
    assert_eq!(profiles(pg), ["postgres"]);
    assert!(pg["image"].as_str().unwrap().starts_with("postgres"));
    assert!(!strings(&pg["healthcheck"]["test"]).is_empty(), "postgres has a healthcheck");

    let instances: Vec<(String, Value)> = groupwatch_services(&doc)
        .into_iter()
        .filter(|(_, s)| profiles(s).contains(&"postgres".to_owned()))
        .filter(|(_, s)| environment(s).get("GROUPWATCH__STORE__URL").is_some_and(|u| u.starts_with("postgres://")))
        .collect();
    let replicas: u64 = instances.iter().map(|(_, s)| s["deploy"]["replicas"].as_u64().unwrap_or(1)).sum();
    assert!(replicas >= 2, "the postgres profile runs at least two groupwatch instances: {instances:?}");
    for (name, s) in &instances {
        let url = &environment(s)["GROUPWATCH__STORE__URL"];
        let host = url::Url::parse(url).unwrap().host_str().map(str::to_owned);
        assert_eq!(host.as_deref(), Some("postgres"), "{name}: the store is the postgres service");
        assert_eq!(s["depends_on"]["postgres"]["condition"].as_str(), Some("service_healthy"), "{name}");
        assert_eq!(s["depends_on"]["rabbitmq"]["condition"].as_str(), Some("service_healthy"), "{name}");
    }
}

#[test]
fn published_host_ports_do_not_clash() {
    let mut seen = BTreeMap::new();
    for (name, s) in services(&compose()) {
        for (host, _) in published_ports(&s) {
            if let Some(other) = seen.insert(host, name.clone()) {
                panic!("host port {host} is published by both {other} and {name}");
            }
        }
    }
}

/// Every `GROUPWATCH__…` variable names a real key, and the real loader accepts the values on top
/// of `groupwatch.example.toml` (the file a user copies to `groupwatch.toml`).
#[test]
fn groupwatch_environment_names_real_config_keys() {
    let doc = compose();
    let example = read("groupwatch.example.toml");
    let gw = groupwatch_services(&doc);
    assert!(gw.len() >= 3, "groupwatch and the postgres instances: {:?}", gw.keys());
    for (name, s) in &gw {
        let env = environment(s);
        for key in env.keys().filter(|k| k.starts_with("GROUPWATCH")) {
            assert!(key.starts_with("GROUPWATCH__") || key == "GROUPWATCH_CONFIG", "{name}: {key}");
            if key == "GROUPWATCH_CONFIG" {
                continue;
            }
            let path: Vec<String> = key["GROUPWATCH__".len()..].split("__").map(str::to_ascii_lowercase).collect();
            let known = match path.as_slice() {
                [section, field] => KEYS.iter().any(|(s, fields)| s == section && fields.contains(&field.as_str())),
                [section, _tenant, field] => section == "wecom" && WECOM_KEYS.contains(&field.as_str()),
                _ => false,
            };
            assert!(known, "{name}: {key} is not a configuration key");
        }
        let config = Config::from_toml(&example, env.clone())
            .unwrap_or_else(|e| panic!("{name}: its environment over groupwatch.example.toml: {e}"));
        assert_eq!(config.http.listen.port(), 8080, "{name}");
    }
}

/// Instances that share an exchange share its inbound queues and so each other's chats: they must
/// share the store too, or a chat moving between them would be diffed against the wrong snapshot.
#[test]
fn instances_on_one_exchange_share_one_store() {
    let doc = compose();
    let example = read("groupwatch.example.toml");
    let mut stores: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, s) in groupwatch_services(&doc) {
        let config = Config::from_toml(&example, environment(&s)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let amqp = config.amqp.url.expose().to_owned();
        stores.entry(format!("{amqp} {}", config.amqp.exchange)).or_default().insert(config.store.url.expose().into());
    }
    for (exchange, urls) in stores {
        assert_eq!(urls.len(), 1, "{exchange} is used by instances with different stores: {urls:?}");
    }
}

#[test]
fn every_allowed_key_exists_in_config_rs() {
    let source = read("src/config.rs");
    for (section, fields) in KEYS {
        assert!(source.contains(&format!("pub {section}: ")), "Config has no section {section}");
        for f in *fields {
            assert!(source.contains(&format!("pub {f}: ")), "config.rs has no key {section}.{f}");
        }
    }
    let wecom = read("src/provider/wecom/config.rs");
    for f in WECOM_KEYS {
        assert!(wecom.contains(&format!("pub {f}: ")), "provider/wecom/config.rs has no key wecom.{f}");
    }
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let text = read("Dockerfile");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let word = |l: &str| l.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
    let froms: Vec<usize> = (0..lines.len()).filter(|&i| word(lines[i]) == "FROM").collect();
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    assert!(lines.iter().any(|l| word(l) == "COPY" && l.contains("--from=")), "the runtime copies from the build");

    let runtime = &lines[*froms.last().unwrap()..];
    assert!(!runtime[0].contains("rust:"), "the runtime image is not the Rust toolchain: {}", runtime[0]);
    let user = runtime.iter().rev().find(|l| word(l) == "USER").expect("the runtime stage sets USER");
    let who = user.split_whitespace().nth(1).unwrap().split(':').next().unwrap();
    assert!(who != "root" && who != "0", "runs as non-root: {user}");

    // sqlx embeds the migrations at compile time, and build.rs tells cargo to watch them.
    let build = &lines[..*froms.last().unwrap()];
    for needed in ["build.rs", "migrations", "Cargo.lock", "src"] {
        assert!(
            build.iter().any(|l| word(l) == "COPY" && l.split_whitespace().any(|w| w.trim_end_matches('/') == needed)),
            "the build stage copies {needed}"
        );
    }
    assert!(build.iter().any(|l| l.contains("cargo build") && l.contains("--locked")), "builds with --locked");
}
