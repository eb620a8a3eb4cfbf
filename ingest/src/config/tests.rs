//! Config parsing: defaults, every variable, and the refusals that name their variable.
#![allow(clippy::expect_used)]

use std::collections::HashMap;

use secrecy::ExposeSecret;

use super::*;

const KEY: &str = "k1:0123456789abcdef0123456789abcdef";

fn from(pairs: &[(&str, &str)]) -> Result<Config, Error> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn defaults_apply_when_only_the_signing_key_is_set() -> Result<(), Error> {
    let config = from(&[("WAFLEET_SIGNING_KEY", KEY)])?;
    assert_eq!(config.amqp_url.expose_secret(), DEFAULT_AMQP_URL);
    assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
    assert_eq!(config.ops_addr.to_string(), DEFAULT_OPS_ADDR);
    assert!(!config.open_webhook && !config.declare_topology);
    assert_eq!(config.body_limit_bytes, 262_144);
    assert_eq!(config.body_timeout, Duration::from_millis(5_000));
    assert_eq!(config.publish_timeout, Duration::from_millis(2_000));
    assert!(config.spool_enabled, "the spool is on unless switched off");
    assert_eq!(config.spool_dir, default_spool_dir());
    assert_eq!((config.spool_max_bytes, config.spool_segment_bytes), (1 << 30, 8 << 20));
    assert_eq!(config.shutdown_drain, Duration::from_secs(10));
    Ok(())
}

#[test]
fn every_variable_is_read() -> Result<(), Error> {
    let config = from(&[
        ("WAFLEET_SIGNING_KEY", KEY),
        ("AMQP_URL", "amqp://u:p@h:5672/v"),
        ("WAFLEET_INGEST_ADDR", "0.0.0.0:0"),
        ("WAFLEET_INGEST_OPS_ADDR", "0.0.0.0:9999"),
        ("WAFLEET_OPEN_WEBHOOK", "TRUE"),
        ("WAFLEET_BODY_LIMIT_BYTES", "1024"),
        ("WAFLEET_BODY_BYTES_IN_FLIGHT", "2048"),
        ("WAFLEET_BODY_TIMEOUT_MS", "10"),
        ("WAFLEET_PUBLISH_TIMEOUT_MS", "20"),
        ("WAFLEET_INGEST_DECLARE_TOPOLOGY", "1"),
        ("WAFLEET_READY_RECHECK_MS", "30"),
        ("WAFLEET_SPOOL_ENABLED", "false"),
        ("WAFLEET_SPOOL_DIR", "/tmp/x-spool"),
        ("WAFLEET_SPOOL_MAX_BYTES", "4096"),
        ("WAFLEET_SPOOL_SEGMENT_BYTES", "1024"),
        ("WAFLEET_SHUTDOWN_DRAIN_SECS", "0"),
    ])?;
    assert_eq!(config.amqp_url.expose_secret(), "amqp://u:p@h:5672/v");
    assert_eq!((config.addr.port(), config.ops_addr.port()), (0, 9999));
    assert!(config.open_webhook && config.declare_topology);
    assert_eq!((config.body_limit_bytes, config.body_bytes_in_flight), (1024, 2048));
    assert_eq!(config.body_timeout, Duration::from_millis(10));
    assert_eq!(config.publish_timeout, Duration::from_millis(20));
    assert_eq!(config.ready_recheck, Duration::from_millis(30));
    assert!(!config.spool_enabled);
    let spool = config.spool_settings();
    assert_eq!((spool.dir.as_path(), spool.max_bytes, spool.segment_bytes), (Path::new("/tmp/x-spool"), 4096, 1024));
    assert_eq!(config.shutdown_drain, Duration::ZERO);
    Ok(())
}

#[test]
fn every_variable_of_the_parser_reaches_the_validation() {
    use clap::CommandFactory as _;
    // Telemetry is the shared group's, handed to `telemetry::init_tracing_for` instead.
    let group = <wafleet_shared::settings::TelemetrySettings as clap::Args>::augment_args(clap::Command::new("t"));
    let telemetry: Vec<String> =
        group.get_arguments().filter_map(|a| a.get_env()?.to_str().map(str::to_owned)).collect();
    assert!(telemetry.iter().any(|v| v == "OTEL_EXPORTER_OTLP_ENDPOINT"));
    let args = IngestArgs::try_parse_from(wafleet_shared::settings::args_from_lookup::<IngestArgs>(|var| {
        (!telemetry.iter().any(|t| t == var)).then(|| format!("value-of-{var}"))
    }))
    .expect("every value is a string");
    for arg in IngestArgs::command().get_arguments() {
        let Some(var) = arg.get_env().and_then(|v| v.to_str()) else { continue };
        if !telemetry.iter().any(|t| t == var) {
            assert_eq!(args.lookup(var), Some(format!("value-of-{var}")), "{var}");
        }
    }
}

#[test]
fn defaults_of_the_parser_are_the_documented_ones() -> Result<(), Error> {
    let args = IngestArgs::try_parse_from(["wafleet-ingest", "--signing-key", KEY]).expect("parses");
    let config = Config::from_args(&args)?;
    assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
    assert_eq!(config.body_limit_bytes, DEFAULT_BODY_LIMIT_BYTES);
    assert_eq!(config.body_bytes_in_flight, DEFAULT_BODY_BYTES_IN_FLIGHT);
    assert_eq!(config.publish_timeout, DEFAULT_PUBLISH_TIMEOUT);
    assert!(config.spool_enabled && !config.open_webhook);
    assert_eq!(config.spool_max_bytes, DEFAULT_SPOOL_MAX_BYTES);
    Ok(())
}

#[test]
fn a_missing_signing_key_is_a_startup_error() {
    assert!(matches!(from(&[]), Err(Error::Config { var: "WAFLEET_SIGNING_KEY", .. })));
}

#[test]
fn startup_errors_never_echo_the_secret() {
    let secret = "shortsecretvalue";
    let message = from(&[("WAFLEET_SIGNING_KEY", &format!("k1:{secret}"))]).err().map(|e| e.to_string());
    assert!(message.as_deref().is_some_and(|m| !m.contains(secret)), "{message:?}");
    let message = from(&[("WAFLEET_SIGNING_KEY", KEY), ("AMQP_URL", "foo:hunter2")]).err().map(|e| e.to_string());
    assert!(message.as_deref().is_some_and(|m| !m.contains("hunter2")), "{message:?}");
}

#[test]
fn malformed_numbers_and_booleans_are_rejected() {
    for (var, value) in [
        ("WAFLEET_BODY_LIMIT_BYTES", "0"),
        ("WAFLEET_BODY_TIMEOUT_MS", "-5"),
        // Less than one body of the default limit (256 KiB).
        ("WAFLEET_BODY_BYTES_IN_FLIGHT", "1000"),
        ("WAFLEET_PUBLISH_TIMEOUT_MS", "2s"),
        ("WAFLEET_OPEN_WEBHOOK", "maybe"),
        ("WAFLEET_INGEST_ADDR", "localhost"),
        ("WAFLEET_INGEST_OPS_ADDR", "9080"),
        ("WAFLEET_INGEST_OPS_ADDR", "127.0.0.1:8080"),
        ("WAFLEET_SPOOL_ENABLED", "sometimes"),
        ("WAFLEET_SPOOL_DIR", " "),
        ("WAFLEET_SPOOL_MAX_BYTES", "1GiB"),
        ("WAFLEET_SPOOL_SEGMENT_BYTES", "2147483648"),
        ("WAFLEET_SHUTDOWN_DRAIN_SECS", "-1"),
    ] {
        let result = from(&[("WAFLEET_SIGNING_KEY", KEY), (var, value)]);
        assert!(matches!(result, Err(Error::Config { var: v, .. }) if v == var), "{var}={value}");
    }
}

#[test]
fn amqp_url_takes_a_list_of_one_cluster_and_refuses_mixed_vhosts() {
    let list = "amqp://u:p@a:5672/v, amqp://u:p@b:5673/v";
    let Ok(config) = from(&[("WAFLEET_SIGNING_KEY", KEY), ("AMQP_URL", list)]) else { panic!("a list refused") };
    assert_eq!(config.amqp_url.expose_secret(), list);
    for (value, refusal) in [
        ("http://u:hunter2@h", "is not a valid amqp"),
        ("amqp://u:hunter2@a/v,amqp://u:hunter2@b/w", "different vhosts"),
    ] {
        let Err(error) = from(&[("WAFLEET_SIGNING_KEY", KEY), ("AMQP_URL", value)]) else { panic!("{value} accepted") };
        assert!(matches!(error, Error::AmqpUrl(_)), "{error:?}");
        let chain =
            format!("{error}: {}", std::error::Error::source(&error).map(|s| s.to_string()).unwrap_or_default());
        assert!(chain.contains(refusal) && !chain.contains("hunter2"), "{chain}");
    }
}
