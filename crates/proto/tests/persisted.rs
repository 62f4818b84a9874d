//! Gates on the protobuf formats Tally persists.
//!
//! Some messages outlive the process that wrote them: stored in PostgreSQL
//! columns (the event log, invoicing's customers, credit notes and invoice
//! lines, rating's plan versions and subscription replica), carried in outbox
//! rows and on topics across a deploy, or hashed into idempotency
//! fingerprints. Renumbering or retyping one of their fields would misread
//! every row written before, and nothing else would notice. Two checks, beside
//! `buf breaking` in CI:
//!
//! 1. `persisted/schema.txt` locks the number, name, label and type of every
//!    field these messages reach. A change fails with what it breaks; only
//!    additions may be accepted (`TALLY_BLESS=1`, then commit the file).
//! 2. `persisted/<message>.hex` holds the bytes of a fully populated message
//!    as its schema was when it was blessed. Today's types must decode them
//!    and encode them back to exactly those bytes: a field they no longer know
//!    is dropped (and the bytes differ), a retyped one does not decode.

// Helpers outside `#[test]` functions panic as the failure report too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use tally_proto::{FILE_DESCRIPTOR_SET, events, invoicing, rating};

/// Each persisted message, with a check that today's Rust type reads its
/// golden bytes back unchanged (`Err` says what differs).
type RoundTrip = fn(&[u8]) -> Result<Vec<u8>, prost::DecodeError>;

fn round_trip<M: Message + Default>(bytes: &[u8]) -> Result<Vec<u8>, prost::DecodeError> {
    Ok(M::decode(bytes)?.encode_to_vec())
}

/// Every message stored or fingerprinted, and where (why it is here).
const PERSISTED: &[(&str, RoundTrip)] = &[
    // ingest.events (the event log) and rejected events.
    (
        "tally.events.v1.UsageEvent",
        round_trip::<events::UsageEvent>,
    ),
    // Outbox rows and topics; rating stores accepted events.
    (
        "tally.events.v1.UsageAccepted",
        round_trip::<events::UsageAccepted>,
    ),
    (
        "tally.events.v1.UsageRejected",
        round_trip::<events::UsageRejected>,
    ),
    // Outbox rows and topics; rating's subscription replica stores them.
    (
        "tally.events.v1.SubscriptionEvent",
        round_trip::<events::SubscriptionEvent>,
    ),
    (
        "tally.events.v1.InvoiceEvent",
        round_trip::<events::InvoiceEvent>,
    ),
    (
        "tally.events.v1.PaymentEvent",
        round_trip::<events::PaymentEvent>,
    ),
    (
        "tally.events.v1.ThresholdCrossed",
        round_trip::<events::ThresholdCrossed>,
    ),
    // invoicing.customers.snapshot, credit_notes.snapshot, invoice_lines.detail:
    // invoicing reads its own model since 20261207800000_invoicing_own_model.sql,
    // but still writes these beside it for the previous release (rollback) and
    // reads them from rows not converted yet (`tally_invoicing::upgrade`), until
    // a later release drops the columns; the three also travel inside InvoiceEvent.
    (
        "tally.invoicing.v1.Customer",
        round_trip::<invoicing::Customer>,
    ),
    (
        "tally.invoicing.v1.CreditNote",
        round_trip::<invoicing::CreditNote>,
    ),
    (
        "tally.invoicing.v1.InvoiceLine",
        round_trip::<invoicing::InvoiceLine>,
    ),
    // rating.plan_versions.content.
    (
        "tally.rating.v1.PlanVersionSpec",
        round_trip::<rating::PlanVersionSpec>,
    ),
    // Requests whose encoding is hashed into a stored idempotency fingerprint:
    // a changed encoding turns an honest retry into a conflict.
    (
        "tally.invoicing.v1.CreateSubscriptionRequest",
        round_trip::<invoicing::CreateSubscriptionRequest>,
    ),
    (
        "tally.invoicing.v1.ChangePlanRequest",
        round_trip::<invoicing::ChangePlanRequest>,
    ),
    (
        "tally.invoicing.v1.CancelSubscriptionRequest",
        round_trip::<invoicing::CancelSubscriptionRequest>,
    ),
    (
        "tally.invoicing.v1.PauseSubscriptionRequest",
        round_trip::<invoicing::PauseSubscriptionRequest>,
    ),
    (
        "tally.invoicing.v1.ResumeSubscriptionRequest",
        round_trip::<invoicing::ResumeSubscriptionRequest>,
    ),
    (
        "tally.invoicing.v1.VoidInvoiceRequest",
        round_trip::<invoicing::VoidInvoiceRequest>,
    ),
    (
        "tally.invoicing.v1.CreateCreditNoteRequest",
        round_trip::<invoicing::CreateCreditNoteRequest>,
    ),
    (
        "tally.invoicing.v1.GrantCreditRequest",
        round_trip::<invoicing::GrantCreditRequest>,
    ),
    (
        "tally.invoicing.v1.VoidCreditGrantRequest",
        round_trip::<invoicing::VoidCreditGrantRequest>,
    ),
    // rating.plan_versions.request_hash (matrix cells' maps are taken out and sorted).
    (
        "tally.rating.v1.CreatePlanVersionRequest",
        round_trip::<rating::CreatePlanVersionRequest>,
    ),
];

const BLESS: &str = "TALLY_BLESS";

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/persisted")
}

fn blessing() -> bool {
    std::env::var(BLESS).is_ok_and(|value| value == "1")
}

/// Every message and enum of the contracts (and the well-known types they
/// import), by full name with a leading dot, as field `type_name`s spell them.
struct Schema {
    messages: BTreeMap<String, DescriptorProto>,
    enums: BTreeMap<String, EnumDescriptorProto>,
}

impl Schema {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let mut schema = Self {
            messages: BTreeMap::new(),
            enums: BTreeMap::new(),
        };
        for file in set.file {
            let scope = format!(".{}", file.package());
            for message in file.message_type {
                schema.add_message(&scope, message);
            }
            for kind in file.enum_type {
                schema
                    .enums
                    .insert(format!("{scope}.{}", kind.name()), kind);
            }
        }
        schema
    }

    fn add_message(&mut self, scope: &str, message: DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested.clone());
        }
        for kind in &message.enum_type {
            self.enums
                .insert(format!("{name}.{}", kind.name()), kind.clone());
        }
        self.messages.insert(name, message);
    }

    fn message(&self, name: &str) -> &DescriptorProto {
        self.messages
            .get(name)
            .unwrap_or_else(|| panic!("no message {name} in the contracts"))
    }

    /// The messages and enums reachable from the persisted roots, our own
    /// only (`google.protobuf` types do not change).
    fn reachable(&self) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<String> = PERSISTED
            .iter()
            .map(|(name, _)| format!(".{name}"))
            .collect();
        while let Some(name) = pending.pop() {
            if name.starts_with(".google.protobuf.") || !seen.insert(name.clone()) {
                continue;
            }
            if let Some(message) = self.messages.get(&name) {
                pending.extend(
                    message
                        .field
                        .iter()
                        .filter(|field| !field.type_name().is_empty())
                        .map(|field| field.type_name().to_owned()),
                );
            }
        }
        seen
    }

    /// One line per message, enum, field and value, in a stable order.
    fn render(&self) -> String {
        let mut out = String::new();
        for name in self.reachable() {
            if let Some(message) = self.messages.get(&name) {
                out.push_str(&format!("message {}\n", &name[1..]));
                let mut fields: Vec<&FieldDescriptorProto> = message.field.iter().collect();
                fields.sort_by_key(|field| field.number());
                for field in fields {
                    out.push_str(&format!("  {}\n", field_line(message, field)));
                }
                for reserved in &message.reserved_range {
                    out.push_str(&format!(
                        "  reserved {}..{}\n",
                        reserved.start(),
                        reserved.end()
                    ));
                }
            } else if let Some(kind) = self.enums.get(&name) {
                out.push_str(&format!("enum {}\n", &name[1..]));
                for value in &kind.value {
                    out.push_str(&format!("  {} {}\n", value.number(), value.name()));
                }
            }
        }
        out
    }
}

/// `3 customer_id string`, with its label and oneof where it has them.
fn field_line(message: &DescriptorProto, field: &FieldDescriptorProto) -> String {
    let kind = match field.r#type() {
        Type::Message | Type::Enum | Type::Group => field.type_name()[1..].to_owned(),
        scalar => scalar
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_lowercase(),
    };
    let mut line = format!("{} {} {kind}", field.number(), field.name());
    if field.label() == Label::Repeated {
        line.push_str(" repeated");
    }
    if field.proto3_optional() {
        line.push_str(" optional");
    } else if let Some(index) = field.oneof_index {
        line.push_str(&format!(
            " oneof {}",
            message.oneof_decl[index as usize].name()
        ));
    }
    line
}

#[test]
fn persisted_messages_keep_their_field_numbers_and_types() {
    let schema = Schema::load();
    let current = schema.render();
    let path = golden_dir().join("schema.txt");
    if blessing() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let locked = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{} ({error}); run with {BLESS}=1", path.display()));
    if locked == current {
        return;
    }
    let now = qualified(&current);
    let before = qualified(&locked);
    let removed: Vec<&String> = before.iter().filter(|line| !now.contains(*line)).collect();
    let added: Vec<&String> = now.iter().filter(|line| !before.contains(*line)).collect();
    assert!(
        removed.is_empty(),
        "a persisted message changed a field that stored data already uses; rows written \
         before would be misread. Add a new field number instead (and `reserved` the old one).\n\
         changed or removed (was):\n  {}\nnow:\n  {}",
        join(&removed),
        join(&added)
    );
    panic!(
        "persisted messages gained fields (safe for stored data); accept them with \
         `{BLESS}=1 cargo test -p tally-proto --test persisted` and commit tests/persisted/:\n  {}",
        join(&added)
    );
}

/// The lines of a rendered schema, each field line prefixed with its
/// message or enum (`tally.events.v1.UsageEvent: 2 customer_id string`).
fn qualified(rendered: &str) -> BTreeSet<String> {
    let mut owner = "";
    let mut lines = BTreeSet::new();
    for line in rendered.lines() {
        if let Some(field) = line.strip_prefix("  ") {
            lines.insert(format!("{owner}: {field}"));
        } else {
            owner = line;
            lines.insert(line.to_owned());
        }
    }
    lines
}

fn join(lines: &[&String]) -> String {
    lines
        .iter()
        .map(|line| line.as_str())
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn golden_bytes_of_every_persisted_message_read_back_unchanged() {
    let schema = Schema::load();
    let mut failures = Vec::new();
    for (name, read_back) in PERSISTED {
        let path = golden_dir().join(format!("{name}.hex"));
        if blessing() {
            let bytes = populated(&schema, &format!(".{name}"), &mut Vec::new());
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, format!("{}\n", hex(&bytes))).unwrap();
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{} ({error}); run with {BLESS}=1", path.display()));
        let golden = unhex(text.trim());
        match read_back(&golden) {
            Ok(again) if again == golden => {}
            Ok(again) => failures.push(format!(
                "{name}: fields of stored bytes were lost or changed\n    golden {}\n    now    {}",
                hex(&golden),
                hex(&again)
            )),
            Err(error) => failures.push(format!("{name}: stored bytes no longer decode: {error}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The golden generator really sets every field: the bytes of a message
/// decode to a value that differs from the default in each of its fields
/// (checked on the most stored one, the event log's `UsageEvent`).
#[test]
fn the_generator_populates_every_field() {
    let schema = Schema::load();
    let bytes = populated(&schema, ".tally.events.v1.UsageEvent", &mut Vec::new());
    let event = events::UsageEvent::decode(bytes.as_slice()).unwrap();
    assert_eq!(event.id, "id");
    assert_eq!(event.customer_id, "customer_id");
    assert_eq!(event.properties.len(), 1);
    assert!(event.timestamp.is_some());
    assert!(!event.source.is_empty());
}

/// A message with every field set to a value derived from the field, encoded
/// from the descriptor alone (so the bytes record the schema as it is now).
/// Fields in number order, as prost writes them; of a oneof, its first member
/// that can be set; a field whose type is already on `path` is left out
/// (recursive messages end).
fn populated(schema: &Schema, name: &str, path: &mut Vec<String>) -> Vec<u8> {
    let message = schema.message(name);
    path.push(name.to_owned());
    let mut fields: Vec<&FieldDescriptorProto> = message.field.iter().collect();
    fields.sort_by_key(|field| field.number());
    let mut set_oneofs = BTreeSet::new();
    let mut out = Vec::new();
    for field in fields {
        let real_oneof = field.oneof_index.filter(|_| !field.proto3_optional());
        if let Some(index) = real_oneof
            && set_oneofs.contains(&index)
        {
            continue;
        }
        if let Some(encoded) = field_bytes(schema, field, path) {
            out.extend(encoded);
            if let Some(index) = real_oneof {
                set_oneofs.insert(index);
            }
        }
    }
    path.pop();
    out
}

fn field_bytes(
    schema: &Schema,
    field: &FieldDescriptorProto,
    path: &mut Vec<String>,
) -> Option<Vec<u8>> {
    let number = field.number() as u64;
    let repeated = field.label() == Label::Repeated;
    let mut out = Vec::new();
    match field.r#type() {
        Type::Message => {
            if path.iter().any(|seen| seen == field.type_name()) {
                return None;
            }
            let nested = populated(schema, field.type_name(), path);
            length_delimited(&mut out, number, &nested);
        }
        Type::String | Type::Bytes => length_delimited(&mut out, number, field.name().as_bytes()),
        scalar => {
            let value = scalar_value(schema, field, scalar)?;
            if repeated {
                // proto3 packs repeated scalars.
                length_delimited(&mut out, number, &value.1);
            } else {
                varint(&mut out, (number << 3) | value.0);
                out.extend(value.1);
            }
        }
    }
    Some(out)
}

/// `(wire type, encoded value)` of a scalar field; `None` for an enum whose
/// only value is zero (nothing to write in proto3).
fn scalar_value(
    schema: &Schema,
    field: &FieldDescriptorProto,
    kind: Type,
) -> Option<(u64, Vec<u8>)> {
    let small = field.number() as u64 * 7;
    let mut bytes = Vec::new();
    let wire = match kind {
        Type::Bool => {
            bytes.push(1);
            0
        }
        Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => {
            varint(&mut bytes, small);
            0
        }
        Type::Sint32 | Type::Sint64 => {
            varint(&mut bytes, small << 1);
            0
        }
        Type::Enum => {
            let kind = &schema.enums[field.type_name()];
            let highest = kind.value.iter().map(|value| value.number()).max()?;
            if highest == 0 {
                return None;
            }
            varint(&mut bytes, highest as u64);
            0
        }
        Type::Fixed32 | Type::Sfixed32 => {
            bytes.extend((small as u32).to_le_bytes());
            5
        }
        Type::Float => {
            bytes.extend(1.5f32.to_le_bytes());
            5
        }
        Type::Fixed64 | Type::Sfixed64 => {
            bytes.extend(small.to_le_bytes());
            1
        }
        Type::Double => {
            bytes.extend(1.5f64.to_le_bytes());
            1
        }
        other => panic!("{}: unexpected field type {other:?}", field.name()),
    };
    Some((wire, bytes))
}

fn length_delimited(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    varint(out, (number << 3) | 2);
    varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}
