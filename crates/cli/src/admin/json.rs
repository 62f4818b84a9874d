//! `--output json`: any Tally message in the proto3 JSON mapping.
//!
//! Instead of a hand-written serde shape per message (which would drift from
//! the contracts), the message is encoded to protobuf and the wire bytes are
//! read back guided by the descriptors compiled into `tally-proto`
//! (`FILE_DESCRIPTOR_SET`). The result follows the proto3 JSON mapping, so a
//! script can feed it to `grpcurl` or any protobuf library:
//! lowerCamelCase field names, enums by name, 64-bit integers as strings,
//! `Timestamp` as RFC 3339, `Duration` as `"1.5s"`, maps as objects, bytes as
//! base64, fields at their default value omitted.

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value};

/// Every message and enum of the contracts, by full name (no leading dot).
struct Registry {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, EnumDescriptorProto>,
}

fn registry() -> anyhow::Result<&'static Registry> {
    static REGISTRY: OnceLock<Result<Registry, String>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let set = FileDescriptorSet::decode(tally_proto::FILE_DESCRIPTOR_SET)
                .map_err(|error| error.to_string())?;
            let mut registry = Registry {
                messages: HashMap::new(),
                enums: HashMap::new(),
            };
            for file in set.file {
                let package = file.package.clone().unwrap_or_default();
                for message in &file.message_type {
                    registry.add_message(&package, message);
                }
                for enumeration in &file.enum_type {
                    registry
                        .enums
                        .insert(join(&package, enumeration.name()), enumeration.clone());
                }
            }
            Ok(registry)
        })
        .as_ref()
        .map_err(|error| anyhow::anyhow!("the compiled contracts cannot be read: {error}"))
}

fn join(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

impl Registry {
    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let full_name = join(scope, message.name());
        for nested in &message.nested_type {
            self.add_message(&full_name, nested);
        }
        for enumeration in &message.enum_type {
            self.enums
                .insert(join(&full_name, enumeration.name()), enumeration.clone());
        }
        self.messages.insert(full_name, message.clone());
    }
}

/// `message` (of protobuf type `full_name`, e.g. `tally.rating.v1.Meter`) as proto3 JSON.
pub fn to_value<M: prost::Message>(message: &M, full_name: &str) -> anyhow::Result<Value> {
    decode_message(registry()?, full_name, &message.encode_to_vec())
        .with_context(|| format!("rendering {full_name} as JSON"))
}

/// One field value read from the wire, before its type is applied.
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn decode_message(registry: &Registry, full_name: &str, bytes: &[u8]) -> anyhow::Result<Value> {
    match full_name {
        "google.protobuf.Timestamp" => return timestamp(bytes),
        "google.protobuf.Duration" => return duration(bytes),
        _ => {}
    }
    let Some(descriptor) = registry.messages.get(full_name) else {
        bail!("no descriptor for {full_name}");
    };
    let mut object = Map::new();
    let mut cursor = bytes;
    while !cursor.is_empty() {
        let (number, raw) = read_field(&mut cursor)?;
        let Some(field) = descriptor
            .field
            .iter()
            .find(|field| field.number() == i32::try_from(number).unwrap_or(-1))
        else {
            continue; // unknown fields have no JSON form
        };
        let name = field
            .json_name
            .clone()
            .unwrap_or_else(|| field.name().to_owned());
        if let Some(entry) = map_entry(registry, field) {
            let Raw::Bytes(entry_bytes) = raw else {
                bail!("map field {name} is not length-delimited");
            };
            let (key, value) = decode_map_entry(registry, entry, entry_bytes)?;
            object
                .entry(name)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .map(|map| map.insert(key, value));
            continue;
        }
        let values = decode_values(registry, field, raw)?;
        if field.label() == Label::Repeated {
            let slot = object
                .entry(name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = slot {
                items.extend(values);
            }
        } else if let Some(value) = values.into_iter().last() {
            object.insert(name, value);
        }
    }
    Ok(Value::Object(object))
}

fn map_entry<'r>(
    registry: &'r Registry,
    field: &FieldDescriptorProto,
) -> Option<&'r DescriptorProto> {
    if field.r#type() != Type::Message || field.label() != Label::Repeated {
        return None;
    }
    let entry = registry
        .messages
        .get(field.type_name().trim_start_matches('.'))?;
    entry
        .options
        .as_ref()
        .and_then(|options| options.map_entry)
        .unwrap_or(false)
        .then_some(entry)
}

fn decode_map_entry(
    registry: &Registry,
    entry: &DescriptorProto,
    bytes: &[u8],
) -> anyhow::Result<(String, Value)> {
    let mut key = String::new();
    let mut value = Value::Null;
    let mut cursor = bytes;
    while !cursor.is_empty() {
        let (number, raw) = read_field(&mut cursor)?;
        let Some(field) = entry
            .field
            .iter()
            .find(|f| i64::from(f.number()) == number as i64)
        else {
            continue;
        };
        let decoded = decode_values(registry, field, raw)?.into_iter().last();
        match (number, decoded) {
            (1, Some(Value::String(text))) => key = text,
            (1, Some(other)) => key = other.to_string(),
            (2, Some(decoded)) => value = decoded,
            _ => {}
        }
    }
    Ok((key, value))
}

/// The values one wire field carries (several for a packed repeated scalar).
fn decode_values(
    registry: &Registry,
    field: &FieldDescriptorProto,
    raw: Raw<'_>,
) -> anyhow::Result<Vec<Value>> {
    let kind = field.r#type();
    if let Raw::Bytes(bytes) = raw
        && !matches!(
            kind,
            Type::String | Type::Bytes | Type::Message | Type::Group
        )
    {
        // Packed repeated scalars: a run of values of the field's wire type.
        let mut cursor = bytes;
        let mut values = Vec::new();
        while !cursor.is_empty() {
            let raw = match kind {
                Type::Double | Type::Fixed64 | Type::Sfixed64 => {
                    Raw::Fixed64(read_u64(&mut cursor)?)
                }
                Type::Float | Type::Fixed32 | Type::Sfixed32 => {
                    Raw::Fixed32(read_u32(&mut cursor)?)
                }
                _ => Raw::Varint(read_varint(&mut cursor)?),
            };
            values.push(scalar(registry, field, raw)?);
        }
        return Ok(values);
    }
    Ok(vec![scalar(registry, field, raw)?])
}

#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
fn scalar(
    registry: &Registry,
    field: &FieldDescriptorProto,
    raw: Raw<'_>,
) -> anyhow::Result<Value> {
    let value = match (field.r#type(), raw) {
        (Type::Message, Raw::Bytes(bytes)) => {
            decode_message(registry, field.type_name().trim_start_matches('.'), bytes)?
        }
        (Type::String, Raw::Bytes(bytes)) => {
            Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
        (Type::Bytes, Raw::Bytes(bytes)) => Value::String(base64(bytes)),
        (Type::Bool, Raw::Varint(v)) => Value::Bool(v != 0),
        (Type::Int32, Raw::Varint(v)) => Value::from(v as i32),
        (Type::Uint32, Raw::Varint(v)) => Value::from(v as u32),
        (Type::Sint32, Raw::Varint(v)) => Value::from(zigzag(v) as i32),
        (Type::Int64, Raw::Varint(v)) => Value::String((v as i64).to_string()),
        (Type::Uint64, Raw::Varint(v)) => Value::String(v.to_string()),
        (Type::Sint64, Raw::Varint(v)) => Value::String(zigzag(v).to_string()),
        (Type::Fixed64, Raw::Fixed64(v)) => Value::String(v.to_string()),
        (Type::Sfixed64, Raw::Fixed64(v)) => Value::String((v as i64).to_string()),
        (Type::Double, Raw::Fixed64(v)) => Value::from(f64::from_bits(v)),
        (Type::Fixed32, Raw::Fixed32(v)) => Value::from(v),
        (Type::Sfixed32, Raw::Fixed32(v)) => Value::from(v as i32),
        (Type::Float, Raw::Fixed32(v)) => Value::from(f64::from(f32::from_bits(v))),
        (Type::Enum, Raw::Varint(v)) => {
            let number = v as i32;
            registry
                .enums
                .get(field.type_name().trim_start_matches('.'))
                .and_then(|e| e.value.iter().find(|value| value.number() == number))
                .map_or_else(
                    || Value::from(number),
                    |value| Value::String(value.name().to_owned()),
                )
        }
        (kind, _) => bail!(
            "field {} ({kind:?}) has an unexpected wire type",
            field.name()
        ),
    };
    Ok(value)
}

#[allow(clippy::cast_possible_wrap)]
fn zigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn read_field<'a>(cursor: &mut &'a [u8]) -> anyhow::Result<(u64, Raw<'a>)> {
    let key = read_varint(cursor)?;
    let raw = match key & 7 {
        0 => Raw::Varint(read_varint(cursor)?),
        1 => Raw::Fixed64(read_u64(cursor)?),
        2 => {
            let length = usize::try_from(read_varint(cursor)?)?;
            anyhow::ensure!(length <= cursor.len(), "truncated message");
            let (bytes, rest) = cursor.split_at(length);
            *cursor = rest;
            Raw::Bytes(bytes)
        }
        5 => Raw::Fixed32(read_u32(cursor)?),
        other => bail!("unsupported wire type {other}"),
    };
    Ok((key >> 3, raw))
}

fn read_varint(cursor: &mut &[u8]) -> anyhow::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = cursor.split_first() else {
            bail!("truncated varint");
        };
        *cursor = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("varint too long")
}

fn read_u64(cursor: &mut &[u8]) -> anyhow::Result<u64> {
    anyhow::ensure!(cursor.len() >= 8, "truncated fixed64");
    let (bytes, rest) = cursor.split_at(8);
    *cursor = rest;
    Ok(u64::from_le_bytes(bytes.try_into()?))
}

fn read_u32(cursor: &mut &[u8]) -> anyhow::Result<u32> {
    anyhow::ensure!(cursor.len() >= 4, "truncated fixed32");
    let (bytes, rest) = cursor.split_at(4);
    *cursor = rest;
    Ok(u32::from_le_bytes(bytes.try_into()?))
}

fn seconds_and_nanos(bytes: &[u8]) -> anyhow::Result<(i64, i32)> {
    let message = prost_types::Timestamp::decode(bytes)?;
    Ok((message.seconds, message.nanos))
}

fn timestamp(bytes: &[u8]) -> anyhow::Result<Value> {
    let (seconds, nanos) = seconds_and_nanos(bytes)?;
    let instant = chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).unwrap_or(0))
        .context("timestamp out of range")?;
    Ok(Value::String(
        instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    ))
}

fn duration(bytes: &[u8]) -> anyhow::Result<Value> {
    // Timestamp and Duration share their wire layout (seconds = 1, nanos = 2).
    let (seconds, nanos) = seconds_and_nanos(bytes)?;
    let text = if nanos == 0 {
        format!("{seconds}s")
    } else {
        let sign = if seconds < 0 || nanos < 0 { "-" } else { "" };
        let fraction = format!("{:09}", nanos.unsigned_abs());
        format!(
            "{sign}{}.{}s",
            seconds.unsigned_abs(),
            fraction.trim_end_matches('0')
        )
    };
    Ok(Value::String(text))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |word, (index, &byte)| {
            word | u32::from(byte) << (16 - 8 * index)
        });
        for index in 0..4 {
            if index <= chunk.len() {
                text.push(char::from(
                    ALPHABET[((word >> (18 - 6 * index)) & 63) as usize],
                ));
            } else {
                text.push('=');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;
    use tally_proto::{common, rating};

    use super::*;

    #[test]
    fn a_plan_version_renders_in_the_proto3_json_mapping() {
        let version = rating::PlanVersion {
            id: "plv_1".into(),
            version: 2,
            status: rating::PlanVersionStatus::Published as i32,
            revision: 7,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_795_000_000,
                nanos: 0,
            }),
            spec: Some(rating::PlanVersionSpec {
                currency: "USD".into(),
                charges: vec![rating::Charge {
                    key: "gpu".into(),
                    price: Some(rating::Price {
                        model: Some(rating::price::Model::Matrix(rating::MatrixPrice {
                            dimensions: vec!["gpu_type".into()],
                            cells: vec![rating::MatrixCell {
                                dimension_values: [("gpu_type".to_owned(), "a100".to_owned())]
                                    .into(),
                                unit_price: Some(common::Decimal {
                                    value: "0.0011".into(),
                                }),
                            }],
                            default_unit_price: None,
                        })),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let value = to_value(&version, "tally.rating.v1.PlanVersion").unwrap();
        assert_eq!(
            value,
            json!({
                "id": "plv_1",
                "version": 2,
                "status": "PLAN_VERSION_STATUS_PUBLISHED",
                "revision": "7",
                "createdAt": "2026-11-18T11:06:40Z",
                "spec": {"currency": "USD", "charges": [{"key": "gpu", "price": {"matrix": {
                    "dimensions": ["gpu_type"],
                    "cells": [{"dimensionValues": {"gpu_type": "a100"}, "unitPrice": {"value": "0.0011"}}]
                }}}]}
            })
        );
    }

    #[test]
    fn bytes_are_base64_and_durations_keep_their_fraction() {
        assert_eq!(base64(b"tally"), "dGFsbHk=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        let bytes = prost_types::Duration {
            seconds: 90,
            nanos: 500_000_000,
        }
        .encode_to_vec();
        assert_eq!(duration(&bytes).unwrap(), json!("90.5s"));
    }
}
