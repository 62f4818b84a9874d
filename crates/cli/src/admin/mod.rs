//! The operator's commands: thin gRPC clients of a running Tally.
//!
//! Every command shares the same plumbing, in this module:
//!
//! - [`Target`]: `--address` (repeatable where a command talks to several
//!   processes), `--api-key` / `TALLY_API_KEY`, `--output table|json`;
//! - [`connect`]: one authenticated channel builder for any service;
//! - [`refused`]: a failed call as an error that prints the gRPC code, the
//!   message and every field violation, with a hint of what to do;
//! - exit codes: 0 done, 1 a call was refused or failed (or, for `reconcile`,
//!   mismatches were found), 2 a usage error ([`UsageError`]; clap's own
//!   parse errors exit 2 too).

pub mod audit;
pub mod catalog;
pub mod catalog_delete;
mod catalog_file;
pub mod catalog_show;
pub mod clock;
pub mod connectors;
pub mod credits;
pub mod customers;
pub mod export;
pub mod finance;
pub mod finance_mrr;
pub mod finance_report;
pub mod finance_retention;
pub mod invoice_actions;
mod invoice_view;
pub mod invoices;
pub mod json;
mod quote_file;
pub mod quotes;
pub mod reconcile;
pub mod subscriptions;
pub mod table;
pub mod usage;

use clap::{Args, ValueEnum};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The proto3 JSON mapping of the responses, for scripts.
    Json,
}

/// Where the service runs and how to authenticate (one address).
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The service's gRPC address (`tally dev` serves every service on one).
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "TALLY_ADDRESS")]
    pub address: String,
    /// API key (`read` for reads, `write` for changes, `admin` for the clock and reconciliation).
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// A PEM CA certificate to trust for `https://` addresses besides the
    /// system's roots (a private CA).
    #[arg(long, env = "TALLY_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// A wrong argument: the command did nothing and exits with 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A shorthand for returning a [`UsageError`].
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Adds the API key to each call.
#[derive(Clone)]
pub struct Authenticate {
    authorization: AsciiMetadataValue,
}

impl std::fmt::Debug for Authenticate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Authenticate") // never print the key
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        Ok(request)
    }
}

/// An authenticated channel, for any generated client's `new`.
pub type Authenticated = InterceptedService<Channel, Authenticate>;

/// Connects to `address` with `api_key` (`https://` trusts the system's roots
/// and `ca_file`); a refused connection says what to start.
pub async fn connect(
    address: &str,
    api_key: &str,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<Authenticated> {
    // `host:port` as people type it means plaintext HTTP/2, as `grpcurl -plaintext` does.
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let endpoint = tally_runtime::tls::endpoint(&url, ca_file).map_err(|error| {
        usage(format!(
            "--address `{address}` is not an address ({error}); write it as http://host:port or https://host:port"
        ))
    })?;
    let authorization: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {api_key}"))
        .map_err(|_| usage("the API key contains characters that cannot be sent in a header"))?;
    let channel = endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot connect to {address}: {}\nhint: is Tally running there? Start it with `tally dev` (which listens on 127.0.0.1:50051) or pass --address",
                source_chain(&error)
            )
        })?;
    Ok(InterceptedService::new(
        channel,
        Authenticate { authorization },
    ))
}

/// The error and its causes, `: `-separated, each said once: a cause that
/// repeats (or extends) the one before it replaces it (hyper's connect error
/// and its source both read `tcp connect error`).
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        match parts.last_mut() {
            Some(last) if text.starts_with(last.as_str()) => *last = text,
            Some(last) if last.contains(&text) => {}
            _ => parts.push(text),
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// A refused or failed call, as an error naming the call, the gRPC code, the
/// message, each field violation and, where one helps, what to do.
pub fn refused(call: &str, status: &tonic::Status) -> anyhow::Error {
    let mut text = format!("{call} failed: {:?}: {}", status.code(), status.message());
    for violation in tally_runtime::error::status_violations(status) {
        text.push_str(&format!(
            "\n  {}: {} ({})",
            violation.field, violation.rule, violation.description
        ));
    }
    let hint = match status.code() {
        tonic::Code::Unauthenticated => Some(
            "pass a valid key with --api-key or TALLY_API_KEY (`tally dev` prints one; `tally keys create` makes more)",
        ),
        tonic::Code::PermissionDenied => Some(
            "this key lacks the scope named above: create one with `tally keys create --scope …`",
        ),
        tonic::Code::Unimplemented => Some(
            "this service does not serve that call: is --address pointing at the right service?",
        ),
        tonic::Code::Unavailable => Some(
            "the service, or something it depends on (see the message), is unavailable; retry once it is back",
        ),
        _ => None,
    };
    if let Some(hint) = hint {
        text.push_str("\nhint: ");
        text.push_str(hint);
    }
    anyhow::Error::msg(text)
}

/// Extension for `Result<tonic::Response<T>, tonic::Status>`: the message, or [`refused`].
pub trait Call<T> {
    /// The response body, or an error describing the refusal of `call`.
    fn answer(self, call: &str) -> anyhow::Result<T>;
}

impl<T> Call<T> for Result<tonic::Response<T>, tonic::Status> {
    fn answer(self, call: &str) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| refused(call, &status))
    }
}

/// Every item of a paged list: `fetch(page_token)` returns one page's items
/// and the next token (empty after the last page).
pub async fn all_pages<T>(
    mut fetch: impl AsyncFnMut(String) -> anyhow::Result<(Vec<T>, String)>,
) -> anyhow::Result<Vec<T>> {
    let mut items = Vec::new();
    let mut page_token = String::new();
    loop {
        let (page, next_page_token) = fetch(page_token).await?;
        items.extend(page);
        if next_page_token.is_empty() {
            return Ok(items);
        }
        page_token = next_page_token;
    }
}

/// Prints a JSON value on stdout.
#[allow(clippy::print_stdout)]
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A `google.protobuf.Timestamp` as RFC 3339 (UTC, seconds), or `-`.
pub fn format_time(time: Option<&prost_types::Timestamp>) -> String {
    time.and_then(|time| {
        chrono::DateTime::from_timestamp(time.seconds, u32::try_from(time.nanos).unwrap_or(0))
    })
    .map_or_else(
        || "-".to_owned(),
        |time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// An RFC 3339 argument as a `Timestamp`, or a usage error naming the option.
pub fn parse_time(option: &str, text: &str) -> anyhow::Result<prost_types::Timestamp> {
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|error| {
        usage(format!(
            "{option} `{text}` is not an RFC 3339 instant ({error}), e.g. 2026-12-01T00:00:00Z"
        ))
    })?;
    Ok(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// A `Money` as `12.34 USD`, or `-`.
pub fn format_money(money: Option<&tally_proto::common::Money>) -> String {
    money.map_or_else(
        || "-".to_owned(),
        |money| format!("{} {}", money.amount, money.currency),
    )
}

/// An enum value's protobuf name without its prefix, in lower case:
/// `short("INVOICE_STATUS_PAID", "INVOICE_STATUS_")` is `paid`.
pub fn short(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase()
}

/// `key=value` options as a map, or a usage error naming the bad one.
pub fn parse_metadata(
    pairs: &[String],
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                .ok_or_else(|| usage(format!("--metadata `{pair}` is not key=value")))
        })
        .collect()
}

/// An optional RFC 3339 option as an optional `Timestamp`.
pub fn parse_optional_time(
    option: &str,
    text: Option<&str>,
) -> anyhow::Result<Option<prost_types::Timestamp>> {
    text.map(|text| parse_time(option, text)).transpose()
}

/// A key for a call that moves billing state: the one given, or a fresh one
/// (so running the same command twice does it twice; pass
/// `--idempotency-key` to make a retry safe).
pub fn idempotency_key(given: Option<&str>, command: &str) -> String {
    given.map_or_else(
        || {
            format!(
                "cli:{command}:{}",
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            )
        },
        str::to_owned,
    )
}

/// A `TimeRange` as `start → end`.
pub fn format_range(range: Option<&tally_proto::common::TimeRange>) -> String {
    range.map_or_else(
        || "-".to_owned(),
        |range| {
            format!(
                "{} → {}",
                format_time(range.start_time.as_ref()),
                format_time(range.end_time.as_ref())
            )
        },
    )
}

/// Prints `message` as proto3 JSON (`--output json`) or runs `table`.
pub fn print_one<M: prost::Message>(
    output: Output,
    message: &M,
    full_name: &str,
    table: impl FnOnce(&M),
) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&json::to_value(message, full_name)?),
        Output::Table => {
            table(message);
            Ok(())
        }
    }
}

/// Prints `messages` as a JSON array (`--output json`) or runs `table`.
pub fn print_many<M: prost::Message>(
    output: Output,
    messages: &[M],
    full_name: &str,
    table: impl FnOnce(&[M]),
) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let values = messages
                .iter()
                .map(|message| json::to_value(message, full_name))
                .collect::<anyhow::Result<Vec<_>>>()?;
            print_json(&serde_json::Value::Array(values))
        }
        Output::Table => {
            table(messages);
            Ok(())
        }
    }
}

/// Prints a blank line and a section title between tables.
#[allow(clippy::print_stdout)]
pub fn heading(title: &str) {
    println!("\n{title}:");
}
