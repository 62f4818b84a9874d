//! Rows as the Storage Write API takes them: one protobuf message per row,
//! described by a `DescriptorProto` built from the declared table
//! ([`crate::tables`]) and encoded field by field with prost's helpers, so no
//! Rust type per table is generated or kept in step by hand.
//!
//! A staged row is a JSON object from column name to value: a string for
//! `STRING`, `JSON` and `NUMERIC`; microseconds since the epoch
//! for `TIMESTAMP`; a number for `INT64`; `true`/`false` for `BOOL`; `null`
//! (or absent) for NULL.

use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto};
use serde_json::{Map, Value};

use crate::tables::{ColumnType, Table, field_number};

/// The row message type of `table` (proto2, as the API reads rows).
pub fn descriptor(table: &Table) -> DescriptorProto {
    let field = table
        .columns
        .iter()
        .enumerate()
        .map(|(index, column)| FieldDescriptorProto {
            name: Some(column.name.to_owned()),
            number: i32::try_from(field_number(index)).ok(),
            label: Some(if column.required {
                Label::Required
            } else {
                Label::Optional
            } as i32),
            r#type: Some(match column.kind {
                ColumnType::Timestamp | ColumnType::Int64 => Type::Int64,
                ColumnType::Bool => Type::Bool,
                ColumnType::String | ColumnType::Json | ColumnType::Numeric => Type::String,
            } as i32),
            ..FieldDescriptorProto::default()
        })
        .collect();
    DescriptorProto {
        name: Some(format!("tally_{}", table.name)),
        field,
        ..DescriptorProto::default()
    }
}

/// Why a staged row cannot be sent (a bug in staging: it is never retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row of {table}: column {column}: {reason}")]
pub struct RowError {
    /// The table.
    pub table: &'static str,
    /// The column.
    pub column: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// `row` serialized as the row message of `table`.
pub fn encode(table: &Table, row: &Map<String, Value>) -> Result<Vec<u8>, RowError> {
    let mut buffer = Vec::with_capacity(256);
    for (index, column) in table.columns.iter().enumerate() {
        let error = |reason: String| RowError {
            table: table.name,
            column: column.name,
            reason,
        };
        let tag = field_number(index);
        match row.get(column.name).unwrap_or(&Value::Null) {
            Value::Null if column.required => return Err(error("required, but null".to_owned())),
            Value::Null => {}
            value => match column.kind {
                ColumnType::Timestamp | ColumnType::Int64 => {
                    let number = value
                        .as_i64()
                        .ok_or_else(|| error(format!("{value} is not an integer")))?;
                    encode_key(tag, WireType::Varint, &mut buffer);
                    // int64 is sent as its two's complement (a negative takes 10 bytes).
                    #[allow(clippy::cast_sign_loss)]
                    encode_varint(number as u64, &mut buffer);
                }
                ColumnType::Bool => {
                    let flag = value
                        .as_bool()
                        .ok_or_else(|| error(format!("{value} is not a boolean")))?;
                    encode_key(tag, WireType::Varint, &mut buffer);
                    encode_varint(u64::from(flag), &mut buffer);
                }
                ColumnType::String | ColumnType::Json | ColumnType::Numeric => {
                    let text = value
                        .as_str()
                        .ok_or_else(|| error(format!("{value} is not a string")))?;
                    encode_key(tag, WireType::LengthDelimited, &mut buffer);
                    encode_varint(text.len() as u64, &mut buffer);
                    buffer.extend_from_slice(text.as_bytes());
                }
            },
        }
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use serde_json::json;

    use super::*;
    use crate::tables::USAGE_EVENTS;

    #[test]
    fn a_row_decodes_with_its_descriptor_field_numbers() {
        let row = json!({
            "customer_id": "cus_1", "event_id": "e1", "event_type": "tokens",
            "event_time": 1_700_000_000_000_000_i64, "properties": "{\"tokens\":\"5\"}",
            "sequence_number": 7, "ingested_at": 1_700_000_000_000_001_i64,
            "exported_at": 1_700_000_000_000_002_i64,
        });
        let bytes = encode(&USAGE_EVENTS, row.as_object().unwrap()).unwrap();
        // Decoded as a generic message: every field present once, by number.
        #[derive(Clone, PartialEq, prost::Message)]
        struct Probe {
            #[prost(string, tag = "1")]
            customer_id: String,
            #[prost(int64, tag = "4")]
            event_time: i64,
            #[prost(string, optional, tag = "6")]
            source: Option<String>,
            #[prost(int64, tag = "7")]
            sequence_number: i64,
        }
        let probe = Probe::decode(bytes.as_slice()).unwrap();
        assert_eq!(probe.customer_id, "cus_1");
        assert_eq!(probe.event_time, 1_700_000_000_000_000);
        assert_eq!(probe.source, None);
        assert_eq!(probe.sequence_number, 7);
        let descriptor = descriptor(&USAGE_EVENTS);
        assert_eq!(descriptor.field.len(), USAGE_EVENTS.columns.len());
        assert_eq!(descriptor.field[3].number, Some(4));
    }

    #[test]
    fn a_missing_required_value_is_refused() {
        let row = json!({"customer_id": "cus_1"});
        let error = encode(&USAGE_EVENTS, row.as_object().unwrap()).unwrap_err();
        assert_eq!(error.column, "event_id");
    }
}
