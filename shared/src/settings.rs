//! Settings groups that several binaries share, as `clap` argument groups: each binary flattens
//! the groups it needs into its own parser, so one variable has one name, one default and one
//! help text everywhere, and `--help` lists it. Only binaries parse them (once, at start); the
//! libraries receive the converted values.
//!
//! Secrets (`WAFLEET_SIGNING_KEY`, `WA_API_KEY`, URLs with passwords) hide their values in
//! `--help` and keys stay in [`SecretString`]. A value that fails to parse is reported with the
//! variable's name by [`parse`] / [`try_parse_from`], and never echoed for a secret: secret
//! arguments take any string and are checked after parsing, and the bad value of an argument
//! that hides its value (`OTEL_EXPORTER_OTLP_HEADERS`) is masked in the message.

use std::ffi::OsString;

use clap::builder::BoolishValueParser;
use clap::error::{ContextKind, ContextValue};
use clap::{ArgAction, Args, CommandFactory, Parser};
use secrecy::SecretString;

use crate::config::{
    DEFAULT_ADMIN_DATABASE_URL, DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, DEFAULT_RABBITMQ_API_URL, DEFAULT_SECRETS_DIR,
    DEFAULT_WA_API_BASE_URL, DEFAULT_WA_API_HOSTS,
};

/// Parses the process arguments and environment into `T`, or prints the error (naming the
/// variable whose value is bad) or the help and exits.
pub fn parse<T: Parser>() -> T {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Like [`parse`], from `args` (the first is the binary name) and the process environment.
pub fn try_parse_from<T, I, A>(args: I) -> Result<T, clap::Error>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    T::try_parse_from(args).map_err(name_the_variable::<T>)
}

/// Arguments that set each `--flag` of `T` that has a variable to what `lookup` returns for the
/// variable, so tests and embedders can inject settings without touching the process
/// environment. The first element is a placeholder binary name.
pub fn args_from_lookup<T: CommandFactory>(lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let command = T::command();
    let mut args = vec![command.get_name().to_owned()];
    for arg in command.get_arguments() {
        let (Some(long), Some(var)) = (arg.get_long(), arg.get_env().and_then(|v| v.to_str())) else { continue };
        if let Some(value) = lookup(var) {
            args.push(format!("--{long}={value}"));
        }
    }
    args
}

/// clap names the flag of a bad value (`--db-pool-size <N>`); operators set variables, so the
/// variable is added to the message. Other errors (and `--help`) pass through unchanged.
fn name_the_variable<T: CommandFactory>(error: clap::Error) -> clap::Error {
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else { return error };
    let long = shown.split_whitespace().next().unwrap_or_default().trim_start_matches("--");
    let command = T::command();
    let arg = command
        .get_arguments()
        .chain(command.get_subcommands().flat_map(|s| s.get_arguments()))
        .find(|a| a.get_long() == Some(long));
    let hidden = arg.is_some_and(|a| a.is_hide_env_values_set());
    let var = arg.and_then(|a| a.get_env()).and_then(|v| v.to_str().map(str::to_owned));
    let Some(var) = var else { return error };
    let rendered = error.render().to_string();
    let mut message = rendered.strip_prefix("error: ").unwrap_or(&rendered).to_owned();
    // A secret's bad value (a collector's API key in OTEL_EXPORTER_OTLP_HEADERS) is not shown.
    if let (true, Some(ContextValue::String(value))) = (hidden, error.get(ContextKind::InvalidValue)) {
        message = message.replace(&format!("'{value}'"), "'<hidden>'");
    }
    let message = message.replacen(&format!("'{shown}'"), &format!("{var} ('{shown}')"), 1);
    clap::Error::raw(error.kind(), message).with_cmd(&command)
}

/// A boolean setting's parser: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`; anything else
/// is an error naming the variable (a typo must not silently flip a safety switch).
pub fn bool_parser() -> BoolishValueParser {
    BoolishValueParser::new()
}

/// The worker's database role, and the switch that allows an unsafe role.
#[derive(Args, Clone, Debug)]
pub struct DatabaseSettings {
    /// Postgres as the worker's role (message path and sender only; no superuser, no BYPASSRLS, owns nothing).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true, global = true)]
    pub database_url: String,
    /// Run even if DATABASE_URL can bypass row-level security or is not the worker's role (local experiments only).
    #[arg(long, env = "WAFLEET_ALLOW_UNSAFE_DB_ROLE", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true", value_parser = bool_parser(), global = true)]
    pub allow_unsafe_db_role: bool,
}

/// The administration role's database (CLI and admin API), and the switch that allows an unsafe role.
#[derive(Args, Clone, Debug)]
pub struct AdminDatabaseSettings {
    /// Postgres as the administration role (tenants and accounts; no superuser, no BYPASSRLS, owns nothing).
    #[arg(long, env = "ADMIN_DATABASE_URL", default_value = DEFAULT_ADMIN_DATABASE_URL, hide_env_values = true, global = true)]
    pub admin_database_url: String,
    /// Run even if ADMIN_DATABASE_URL can bypass row-level security or is not the administration role (local experiments only).
    #[arg(long, env = "WAFLEET_ALLOW_UNSAFE_DB_ROLE", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true", value_parser = bool_parser(), global = true)]
    pub allow_unsafe_db_role: bool,
}

/// The broker's AMQP endpoint.
#[derive(Args, Clone, Debug)]
pub struct AmqpSettings {
    /// RabbitMQ over AMQP; the path is the vhost.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true, global = true)]
    pub amqp_url: String,
}

/// The broker: AMQP and the management API.
#[derive(Args, Clone, Debug)]
pub struct BrokerSettings {
    /// The AMQP endpoint.
    #[command(flatten)]
    pub amqp: AmqpSettings,
    /// RabbitMQ management API (policies, depth); the vhost is taken from AMQP_URL.
    #[arg(long, env = "RABBITMQ_API_URL", default_value = DEFAULT_RABBITMQ_API_URL, hide_env_values = true, global = true)]
    pub rabbitmq_api_url: String,
}

/// How WA Bridges is reached: base URL, request bound and the default account's key.
#[derive(Args, Clone, Debug)]
pub struct WaApiSettings {
    /// WA Bridges base URL, for accounts without their own.
    #[arg(long, env = "WA_API_BASE_URL", default_value = DEFAULT_WA_API_BASE_URL, global = true)]
    pub wa_api_base_url: String,
    /// Bound of one WA Bridges request, in milliseconds.
    #[arg(long, env = "WAFLEET_SEND_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    pub send_timeout_ms: u64,
    /// WA Bridges API key of the default account (its key reference is `env:WA_API_KEY`).
    #[arg(long, env = "WA_API_KEY", hide_env_values = true, value_parser = secret, global = true)]
    pub wa_api_key: Option<SecretString>,
    /// The one folder an account's `file:` key reference may point into.
    #[arg(long, env = "WAFLEET_SECRETS_DIR", default_value = DEFAULT_SECRETS_DIR, global = true)]
    pub secrets_dir: std::path::PathBuf,
    /// Hosts (comma-separated) an account's https base URL may name.
    #[arg(long, env = "WAFLEET_WA_API_HOSTS", default_value = DEFAULT_WA_API_HOSTS, value_delimiter = ',',
          global = true)]
    pub wa_api_hosts: Vec<String>,
}

/// The send budget of accounts without their own, and the window of every bucket.
#[derive(Args, Clone, Debug)]
pub struct BudgetSettings {
    /// Proxy calls per window of accounts without their own rate; rate + burst must fit 120.
    #[arg(long, env = "WAFLEET_SEND_RATE_PER_MIN", default_value_t = 110,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub send_rate_per_min: u32,
    /// Bucket capacity of accounts without their own.
    #[arg(long, env = "WAFLEET_SEND_BURST", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub send_burst: u32,
    /// The API's "minute", in seconds; only tests and benchmarks shorten it.
    #[arg(long, env = "WAFLEET_BUDGET_WINDOW_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub budget_window_secs: u64,
    /// The egress group: every process that leaves through the same public IP names the same
    /// group, and the group shares one budget under WA Bridges' per-IP limit.
    #[arg(long, env = "WAFLEET_EGRESS_GROUP", default_value = "default", global = true)]
    pub egress_group: String,
    /// Calls per window of the whole egress group, all accounts together; rate + burst must fit
    /// the documented 300 requests a minute per IP.
    #[arg(long, env = "WAFLEET_EGRESS_RATE_PER_MIN", default_value_t = 290,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub egress_rate_per_min: u32,
    /// Capacity of the egress group's bucket.
    #[arg(long, env = "WAFLEET_EGRESS_BURST", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub egress_burst: u32,
}

/// How long tenant data is kept (the worker's retention runs and `wafleet retention run`).
#[derive(Args, Clone, Debug)]
pub struct RetentionSettings {
    /// Processed events, message log and finished outbox rows older than this many days are deleted.
    #[arg(long, env = "WAFLEET_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub retention_days: u32,
}

/// The consume-side retry tiers (the worker retries through them; `wafleet migrate` declares them).
#[derive(Args, Clone, Debug)]
pub struct RetrySettings {
    /// Delays of the retry tiers wa.retry.<tier> (units ms, s, m, h); at least one.
    #[arg(long, env = "WAFLEET_RETRY_TIERS", default_value = "5s,30s,2m,10m", global = true)]
    pub retry_tiers: String,
}

/// The webhook URL signing keyring (required by ingest, optional elsewhere).
#[derive(Args, Clone, Debug)]
pub struct SigningSettings {
    /// Keyring `key_id:secret[,key_id:secret...]`; the first key signs, every key verifies.
    #[arg(long, env = "WAFLEET_SIGNING_KEY", hide_env_values = true, value_parser = secret, global = true)]
    pub signing_key: Option<SecretString>,
}

/// Logs and traces.
#[derive(Args, Clone, Debug)]
pub struct TelemetrySettings {
    /// Log format: `pretty` (local) or `json` (the cluster).
    #[arg(long, env = "WAFLEET_LOG_FORMAT", default_value = "pretty", value_parser = ["pretty", "json"], global = true)]
    pub log_format: String,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// OpenTelemetry collector base URL; spans are exported over OTLP when set (http/protobuf: to <url>/v1/traces).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = otlp_url, global = true)]
    pub otlp_endpoint: Option<String>,
    /// Traces endpoint, used as is; overrides OTEL_EXPORTER_OTLP_ENDPOINT (and turns export on by itself).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value_parser = otlp_url, global = true)]
    pub otlp_traces_endpoint: Option<String>,
    /// OTLP protocol [default: http/protobuf].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_parser = OTLP_PROTOCOLS, global = true)]
    pub otlp_protocol: Option<String>,
    /// OTLP protocol of traces; overrides OTEL_EXPORTER_OTLP_PROTOCOL.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value_parser = OTLP_PROTOCOLS, global = true)]
    pub otlp_traces_protocol: Option<String>,
    /// Headers of every export, key=value[,key=value...] (values percent-encoded), e.g. an API key of the collector.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", hide_env_values = true, value_parser = key_values, global = true)]
    pub otlp_headers: Option<KeyValues>,
    /// service.name of the spans [default: the binary's name].
    #[arg(long, env = "OTEL_SERVICE_NAME", global = true)]
    pub otel_service_name: Option<String>,
    /// Resource attributes of the spans, key=value[,key=value...] (values percent-encoded).
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", value_parser = key_values, global = true)]
    pub otel_resource_attributes: Option<KeyValues>,
    /// Sampler [default: parentbased_always_on].
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_parser = SAMPLERS, global = true)]
    pub otel_traces_sampler: Option<String>,
    /// Ratio of the traceidratio samplers, from 0 to 1 [default: 1].
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", value_parser = ratio, global = true)]
    pub otel_traces_sampler_arg: Option<f64>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: "pretty".into(),
            log_filter: "info".into(),
            otlp_endpoint: None,
            otlp_traces_endpoint: None,
            otlp_protocol: None,
            otlp_traces_protocol: None,
            otlp_headers: None,
            otel_service_name: None,
            otel_resource_attributes: None,
            otel_traces_sampler: None,
            otel_traces_sampler_arg: None,
        }
    }
}

/// The OTLP protocols wafleet exports with (`http/json` is not built in).
pub const OTLP_PROTOCOLS: [&str; 2] = ["grpc", "http/protobuf"];
/// The samplers of the OpenTelemetry environment specification that the SDK has built in.
pub const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// `key=value` pairs in the order given (W3C baggage form: comma-separated, values percent-encoded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyValues(pub Vec<(String, String)>);

fn key_values(raw: &str) -> Result<KeyValues, String> {
    let mut pairs = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once('=').ok_or("must be key=value pairs separated by commas")?;
        let key = key.trim();
        if key.is_empty() {
            return Err("has a pair without a key".into());
        }
        pairs.push((key.to_owned(), percent_decode(value.trim()).ok_or("has a value with a bad %-escape")?));
    }
    Ok(KeyValues(pairs))
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn otlp_url(raw: &str) -> Result<String, String> {
    let url = raw.trim();
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.to_owned())
    } else {
        Err("must be an http:// or https:// URL".into())
    }
}

fn ratio(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("must be a number from 0 to 1".into()),
    }
}

/// A secret argument: any string is accepted (so a parse error can never echo it); empty means
/// unset.
fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        budget: BudgetSettings,
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = try_parse_from::<Probe, _, _>(["probe", "--send-burst=0"]).unwrap_err().to_string();
        assert!(e.contains("WAFLEET_SEND_BURST"), "{e}");
        let e = try_parse_from::<Probe, _, _>(["probe", "--allow-unsafe-db-role=maybe"]).unwrap_err().to_string();
        assert!(e.contains("WAFLEET_ALLOW_UNSAFE_DB_ROLE"), "{e}");
    }

    #[test]
    fn lookup_values_become_arguments() {
        let args = args_from_lookup::<Probe>(|v| (v == "WAFLEET_SEND_BURST").then(|| "7".to_owned()));
        let probe = try_parse_from::<Probe, _, _>(args).unwrap();
        assert_eq!(probe.budget.send_burst, 7);
        assert!(!probe.database.allow_unsafe_db_role);
    }
}
