//! Wire ↔ model for `AuditService`.

use tally_proto::audit::{self as proto};
use tally_proto::convert;

use crate::chain::{BrokenLinkKind, Head, Verification, parse_head};
use crate::error::AuditError;
use crate::schema::Schema;
use crate::store::{Filter, StoredEntry};

/// A stored entry on the wire.
pub(crate) fn entry(entry: &StoredEntry) -> proto::AuditEntry {
    let kind = match entry.actor_kind.as_str() {
        "api_key" => proto::ActorKind::ApiKey,
        "system" => proto::ActorKind::System,
        "anonymous" => proto::ActorKind::Anonymous,
        // The table's CHECK admits only the three above.
        _ => proto::ActorKind::Unspecified,
    };
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    proto::AuditEntry {
        id: entry.id.clone(),
        chain: entry.schema.chain_name().to_owned(),
        sequence: entry.sequence,
        recorded_at: Some(convert::timestamp(entry.recorded_at)),
        action: entry.action.clone(),
        resource_type: entry.resource_type.clone(),
        resource_id: entry.resource_id.clone(),
        actor: Some(proto::Actor {
            kind: kind.into(),
            id: entry.actor_id.clone(),
            name: entry.actor_name.clone(),
        }),
        request_id: text(&entry.request_id),
        trace_id: text(&entry.trace_id),
        reason: text(&entry.reason),
        comment: text(&entry.comment),
        before_json: text(&entry.before_state),
        after_json: text(&entry.after_state),
        previous_hash: hex::encode(&entry.previous_hash),
        hash: hex::encode(&entry.hash),
    }
}

/// The filter of a list request.
pub(crate) fn filter(request: &proto::ListAuditEntriesRequest) -> Result<Filter, AuditError> {
    let text = |value: &str| Some(value.to_owned()).filter(|value| !value.is_empty());
    let from = convert::instant(request.from.as_ref());
    let to = convert::instant(request.to.as_ref());
    if request.from.is_some() && from.is_none() {
        return Err(AuditError::invalid(
            "from",
            "invalid_timestamp",
            "is not a valid instant",
        ));
    }
    if request.to.is_some() && to.is_none() {
        return Err(AuditError::invalid(
            "to",
            "invalid_timestamp",
            "is not a valid instant",
        ));
    }
    if let (Some(from), Some(to)) = (from, to)
        && to <= from
    {
        return Err(AuditError::invalid(
            "to",
            "invalid_range",
            "must be after `from`",
        ));
    }
    Ok(Filter {
        resource_type: text(&request.resource_type),
        resource_id: text(&request.resource_id),
        actor_id: text(&request.actor_id),
        action: text(&request.action),
        from,
        to,
    })
}

/// A head on the wire.
pub(crate) fn head(head: &Head) -> proto::AuditChainHead {
    proto::AuditChainHead {
        chain: head.schema.chain_name().to_owned(),
        sequence: head.sequence,
        hash: head.hash_hex(),
    }
}

/// An exported head sent to be checked (`expected_heads[index]`).
pub(crate) fn expected_head(
    index: usize,
    head: &proto::AuditChainHead,
) -> Result<Head, AuditError> {
    let schema = Schema::from_chain_name(&head.chain).ok_or_else(|| {
        AuditError::invalid(
            "expected_heads",
            "invalid_value",
            format!("expected_heads[{index}]: unknown chain `{}`", head.chain),
        )
    })?;
    parse_head(schema, &format!("{}:{}", head.sequence, head.hash)).ok_or_else(|| {
        AuditError::invalid(
            "expected_heads",
            "invalid_value",
            format!(
                "expected_heads[{index}]: needs a sequence ≥ 0 and a hash of 64 hex characters"
            ),
        )
    })
}

/// A verdict on the wire.
pub(crate) fn verification(
    schema: Schema,
    verification: &Verification,
) -> proto::AuditChainVerification {
    proto::AuditChainVerification {
        chain: schema.chain_name().to_owned(),
        entries_checked: verification.entries_checked,
        head: Some(head(&verification.head)),
        broken_link: verification
            .broken
            .as_ref()
            .map(|broken| proto::BrokenLink {
                kind: match broken.kind {
                    BrokenLinkKind::SequenceGap => proto::BrokenLinkKind::SequenceGap,
                    BrokenLinkKind::PreviousHash => proto::BrokenLinkKind::PreviousHash,
                    BrokenLinkKind::Hash => proto::BrokenLinkKind::Hash,
                    BrokenLinkKind::Head => proto::BrokenLinkKind::Head,
                    BrokenLinkKind::ExportedHead => proto::BrokenLinkKind::ExportedHead,
                }
                .into(),
                sequence: broken.sequence,
                expected: broken.expected.clone(),
                found: broken.found.clone(),
            }),
    }
}
