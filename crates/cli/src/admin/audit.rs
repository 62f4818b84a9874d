//! `tally audit list|show|verify|head` over `tally.audit.v1.AuditService`.
//!
//! A process answers for the chains it serves: `tally dev` for all of them,
//! a service in a cluster for its own and `auth` — point `--address` at the
//! service whose chain you want.

use clap::Subcommand;
use tally_proto::audit::audit_service_client::AuditServiceClient;
use tally_proto::audit::{
    ActorKind, AuditChainHead, AuditChainVerification, AuditEntry, BrokenLinkKind,
    GetAuditChainHeadRequest, GetAuditEntryRequest, ListAuditEntriesRequest,
    VerifyAuditChainRequest,
};

use super::table::Table;
use super::{
    Call as _, Output, Target, connect, format_time, heading, parse_optional_time, print_json,
    print_many, print_one, short, usage,
};

/// `tally audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Entries in time order (oldest first), filtered.
    List {
        /// Only this chain (`auth`, `ingest`, `rating`, `invoicing`, `payments`, `finance`,
        /// `connectors`).
        #[arg(long, alias = "chain")]
        service: Option<String>,
        /// Only entries about this resource id (`inv_…`, `cn_…`, `key_…`).
        #[arg(long)]
        resource: Option<String>,
        /// Only entries by this actor (`key_…`, `bill_run`, `tally_keys`).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (`invoice.voided`, `credit_note.issued`, …).
        #[arg(long)]
        action: Option<String>,
        /// Recorded at or after (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Recorded before (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// One entry with its before/after state and hashes.
    Show {
        /// `aud_…`.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Walks each chain and reports its first broken link; exits 1 when one
    /// is broken. Pass heads printed earlier by `tally audit head` to catch
    /// a history rewritten with recomputed hashes.
    Verify {
        /// Only this chain.
        #[arg(long, alias = "chain")]
        service: Option<String>,
        /// A head exported earlier, `<chain>:<sequence>:<hash>` (repeatable).
        #[arg(long = "head")]
        heads: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Each chain's head, `<chain>:<sequence>:<hash>`: keep it outside the database.
    Head {
        /// Only this chain.
        #[arg(long, alias = "chain")]
        service: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

type Client = AuditServiceClient<super::Authenticated>;

/// Runs `tally audit`.
pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List {
            service,
            resource,
            actor,
            action,
            from,
            to,
            limit,
            target,
        } => {
            let request = ListAuditEntriesRequest {
                chain: service.unwrap_or_default(),
                resource_id: resource.unwrap_or_default(),
                actor_id: actor.unwrap_or_default(),
                action: action.unwrap_or_default(),
                from: parse_optional_time("--from", from.as_deref())?,
                to: parse_optional_time("--to", to.as_deref())?,
                ..Default::default()
            };
            let entries = list(&target, request, limit).await?;
            print_many(
                target.output,
                &entries,
                "tally.audit.v1.AuditEntry",
                |entries| entries_table(entries).print(),
            )
        }
        AuditCommand::Show { id, target } => {
            let entry = client(&target)
                .await?
                .get_audit_entry(GetAuditEntryRequest { id: id.clone() })
                .await
                .answer(&format!("GetAuditEntry {id}"))?
                .entry
                .unwrap_or_default();
            print_one(target.output, &entry, "tally.audit.v1.AuditEntry", show)
        }
        AuditCommand::Verify {
            service,
            heads,
            target,
        } => verify(service, &heads, &target).await,
        AuditCommand::Head { service, target } => {
            let response = client(&target)
                .await?
                .get_audit_chain_head(GetAuditChainHeadRequest {
                    chain: service.unwrap_or_default(),
                })
                .await
                .answer("GetAuditChainHead")?;
            if target.output == Output::Json {
                return print_json(&super::json::to_value(
                    &response,
                    "tally.audit.v1.GetAuditChainHeadResponse",
                )?);
            }
            let mut table = Table::new(&["chain", "head", "read at"]);
            for head in &response.heads {
                table.row(vec![
                    head.chain.clone(),
                    head_text(head),
                    format_time(response.read_at.as_ref()),
                ]);
            }
            table.print();
            Ok(())
        }
    }
}

/// Prints the audit timeline of `resource` under a "history" heading (the
/// invoice view's last section). A service that does not answer for the
/// chain, or a key that may not read it, leaves a note instead of failing
/// the view.
#[allow(clippy::print_stdout)]
pub async fn print_timeline(target: &Target, resource: &str) -> anyhow::Result<()> {
    let request = ListAuditEntriesRequest {
        resource_id: resource.to_owned(),
        ..Default::default()
    };
    heading("history");
    let mut client = client(target).await?;
    match client.list_audit_entries(request).await {
        Ok(response) => {
            let entries = response.into_inner().entries;
            if entries.is_empty() {
                println!("(no audit entries)");
            } else {
                entries_table(&entries).print();
            }
        }
        Err(status) => println!(
            "(not shown: ListAuditEntries answered {:?}: {})",
            status.code(),
            status.message()
        ),
    }
    Ok(())
}

async fn client(target: &Target) -> anyhow::Result<Client> {
    Ok(AuditServiceClient::new(
        connect(&target.address, &target.api_key, target.ca_file.as_deref()).await?,
    ))
}

/// Up to `limit` entries, page by page.
async fn list(
    target: &Target,
    request: ListAuditEntriesRequest,
    limit: usize,
) -> anyhow::Result<Vec<AuditEntry>> {
    let mut client = client(target).await?;
    let mut entries = Vec::new();
    let mut page_token = String::new();
    while entries.len() < limit {
        let page = client
            .list_audit_entries(ListAuditEntriesRequest {
                page_size: i32::try_from((limit - entries.len()).min(1000)).unwrap_or(1000),
                page_token,
                ..request.clone()
            })
            .await
            .answer("ListAuditEntries")?;
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(entries)
}

async fn verify(service: Option<String>, heads: &[String], target: &Target) -> anyhow::Result<()> {
    let expected_heads = heads
        .iter()
        .map(|text| parse_head(text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let response = client(target)
        .await?
        .verify_audit_chain(VerifyAuditChainRequest {
            chain: service.unwrap_or_default(),
            expected_heads,
        })
        .await
        .answer("VerifyAuditChain")?;
    if target.output == Output::Json {
        print_json(&super::json::to_value(
            &response,
            "tally.audit.v1.VerifyAuditChainResponse",
        )?)?;
    } else {
        verification_table(&response.chains).print();
    }
    let broken: Vec<&str> = response
        .chains
        .iter()
        .filter(|chain| chain.broken_link.is_some())
        .map(|chain| chain.chain.as_str())
        .collect();
    anyhow::ensure!(
        broken.is_empty(),
        "broken audit chain: {} (see above; docs/operations.md, \"Audit log\")",
        broken.join(", ")
    );
    Ok(())
}

/// `<chain>:<sequence>:<hash>` as printed by `tally audit head`.
fn parse_head(text: &str) -> anyhow::Result<AuditChainHead> {
    let mut parts = text.splitn(3, ':');
    let (Some(chain), Some(sequence), Some(hash)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(usage(format!(
            "--head `{text}` is not <chain>:<sequence>:<hash> (as `tally audit head` prints it)"
        )));
    };
    let sequence = sequence.parse().map_err(|_| {
        usage(format!(
            "--head `{text}`: `{sequence}` is not a sequence number"
        ))
    })?;
    Ok(AuditChainHead {
        chain: chain.to_owned(),
        sequence,
        hash: hash.to_owned(),
    })
}

fn head_text(head: &AuditChainHead) -> String {
    format!("{}:{}:{}", head.chain, head.sequence, head.hash)
}

fn actor_text(entry: &AuditEntry) -> String {
    let Some(actor) = &entry.actor else {
        return "-".to_owned();
    };
    match ActorKind::try_from(actor.kind) {
        Ok(ActorKind::ApiKey) => format!("{} ({})", actor.id, actor.name),
        Ok(ActorKind::Anonymous) => "anonymous".to_owned(),
        _ => actor.id.clone(),
    }
}

fn entries_table(entries: &[AuditEntry]) -> Table {
    let mut table = Table::new(&[
        "recorded", "chain", "seq", "action", "resource", "actor", "reason", "id",
    ]);
    for entry in entries {
        table.row(vec![
            format_time(entry.recorded_at.as_ref()),
            entry.chain.clone(),
            entry.sequence.to_string(),
            entry.action.clone(),
            entry.resource_id.clone(),
            actor_text(entry),
            entry.reason.clone(),
            entry.id.clone(),
        ]);
    }
    table
}

/// Canonical JSON, indented for reading (or `-`).
fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| {
            if json.is_empty() {
                "-".into()
            } else {
                json.into()
            }
        })
}

#[allow(clippy::print_stdout)]
fn show(entry: &AuditEntry) {
    let or_dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    Table::fields(&[
        ("id", entry.id.clone()),
        ("chain", format!("{} #{}", entry.chain, entry.sequence)),
        ("recorded", format_time(entry.recorded_at.as_ref())),
        ("action", entry.action.clone()),
        (
            "resource",
            format!("{} {}", entry.resource_type, entry.resource_id),
        ),
        ("actor", actor_text(entry)),
        ("reason", or_dash(&entry.reason)),
        ("comment", or_dash(&entry.comment)),
        ("request id", or_dash(&entry.request_id)),
        ("trace id", or_dash(&entry.trace_id)),
        ("previous hash", entry.previous_hash.clone()),
        ("hash", entry.hash.clone()),
    ])
    .print();
    heading("before");
    println!("{}", pretty(&entry.before_json));
    heading("after");
    println!("{}", pretty(&entry.after_json));
}

fn verification_table(chains: &[AuditChainVerification]) -> Table {
    let mut table = Table::new(&["chain", "entries", "head", "verdict"]);
    for chain in chains {
        let verdict = match &chain.broken_link {
            None => "intact".to_owned(),
            Some(link) => format!(
                "BROKEN at {}: {} (expected {}, found {})",
                link.sequence,
                BrokenLinkKind::try_from(link.kind).map_or_else(
                    |_| link.kind.to_string(),
                    |kind| short(kind.as_str_name(), "BROKEN_LINK_KIND_"),
                ),
                link.expected,
                link.found
            ),
        };
        table.row(vec![
            chain.chain.clone(),
            chain.entries_checked.to_string(),
            chain.head.as_ref().map_or_else(|| "-".into(), head_text),
            verdict,
        ]);
    }
    table
}
