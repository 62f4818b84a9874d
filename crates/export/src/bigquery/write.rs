//! The Storage Write API: committed streams and appends at explicit offsets.
//!
//! An append names the offset its first row must land at. The answer is
//! what makes the export exactly once (see `crate::exporter`): the rows
//! landed; `ALREADY_EXISTS` — that offset is already written, by this very
//! batch before a crash; or `OUT_OF_RANGE` — the stream ends before the
//! offset, which the exporter's bookkeeping never allows (a bug).
//!
//! Each append opens its own `AppendRows` call carrying the writer schema:
//! one request, one answer. Simpler than keeping a connection per table
//! open, at the cost of a round trip per batch (batches are large).

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::wire::big_query_write_client::BigQueryWriteClient;
use super::wire::{
    AppendRowsRequest, CreateWriteStreamRequest, FinalizeWriteStreamRequest, GetWriteStreamRequest,
    ProtoRows, ProtoSchema, WriteStream, append_rows_request, append_rows_response, write_stream,
};
use super::{Auth, BigQueryError, Target, rows};
use crate::tables::Table;

/// `google.rpc.Code.ALREADY_EXISTS`.
const ALREADY_EXISTS: i32 = 6;
/// `google.rpc.Code.OUT_OF_RANGE`.
const OUT_OF_RANGE: i32 = 11;

/// What became of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The rows landed at the offset.
    Written,
    /// The offset was already written (by the same batch, before a crash).
    AlreadyExists,
    /// The stream ends before the offset: a bug in the bookkeeping.
    OutOfRange(String),
}

/// The Storage Write client of one dataset.
#[derive(Debug, Clone)]
pub struct Writer {
    target: Target,
    auth: Auth,
    client: BigQueryWriteClient<Channel>,
}

impl Writer {
    /// A client of `target`, connecting on first use.
    pub fn new(target: Target, auth: Auth) -> Result<Self, BigQueryError> {
        let mut endpoint = Endpoint::from_shared(target.grpc_endpoint.clone())?
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120));
        if target.grpc_endpoint.starts_with("https://") {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots())?;
        }
        let client = BigQueryWriteClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        Ok(Self {
            target,
            auth,
            client,
        })
    }

    async fn request<T>(
        &self,
        message: T,
        routing: (&str, &str),
    ) -> Result<tonic::Request<T>, BigQueryError> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = MetadataMap::from_headers(self.auth.headers().await?);
        // BigQuery routes the call by this header (its resource name).
        let params = format!("{}={}", routing.0, routing.1);
        let value = MetadataValue::try_from(params.as_str())
            .map_err(|error| BigQueryError::Invalid(format!("routing header: {error}")))?;
        request
            .metadata_mut()
            .insert("x-goog-request-params", value);
        Ok(request)
    }

    /// Creates a committed stream on `table`; returns its name.
    pub async fn create_committed_stream(&self, table: &Table) -> Result<String, BigQueryError> {
        let parent = self.target.table_path(table.name);
        let request = self
            .request(
                CreateWriteStreamRequest {
                    parent: parent.clone(),
                    write_stream: Some(WriteStream {
                        r#type: write_stream::Type::Committed.into(),
                        ..WriteStream::default()
                    }),
                },
                ("parent", &parent),
            )
            .await?;
        let stream = self
            .client
            .clone()
            .create_write_stream(request)
            .await?
            .into_inner();
        if stream.name.is_empty() {
            return Err(BigQueryError::Invalid(
                "CreateWriteStream answered a stream without a name".to_owned(),
            ));
        }
        Ok(stream.name)
    }

    /// The stream named `name`, or `None` when BigQuery no longer has it.
    pub async fn get_stream(&self, name: &str) -> Result<Option<WriteStream>, BigQueryError> {
        let request = self
            .request(
                GetWriteStreamRequest {
                    name: name.to_owned(),
                },
                ("name", name),
            )
            .await?;
        match self.client.clone().get_write_stream(request).await {
            Ok(stream) => Ok(Some(stream.into_inner())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// Closes `name` to appends; returns the rows it holds.
    pub async fn finalize(&self, name: &str) -> Result<i64, BigQueryError> {
        let request = self
            .request(
                FinalizeWriteStreamRequest {
                    name: name.to_owned(),
                },
                ("name", name),
            )
            .await?;
        Ok(self
            .client
            .clone()
            .finalize_write_stream(request)
            .await?
            .into_inner()
            .row_count)
    }

    /// Appends `serialized` rows of `table` to `stream` at `offset`.
    pub async fn append(
        &self,
        stream: &str,
        table: &Table,
        offset: i64,
        serialized: Vec<Vec<u8>>,
    ) -> Result<Appended, BigQueryError> {
        let append = AppendRowsRequest {
            write_stream: stream.to_owned(),
            offset: Some(offset),
            rows: Some(append_rows_request::Rows::ProtoRows(
                append_rows_request::ProtoData {
                    writer_schema: Some(ProtoSchema {
                        proto_descriptor: Some(rows::descriptor(table)),
                    }),
                    rows: Some(ProtoRows {
                        serialized_rows: serialized,
                    }),
                },
            )),
            trace_id: "tally-export".to_owned(),
        };
        let request = self
            .request(tokio_stream::once(append), ("write_stream", stream))
            .await?;
        let mut responses = match self.client.clone().append_rows(request).await {
            Ok(responses) => responses.into_inner(),
            Err(status) => return classify_status(status),
        };
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                return Err(BigQueryError::Invalid(
                    "AppendRows closed without an answer".to_owned(),
                ));
            }
            Err(status) => return classify_status(status),
        };
        if !response.row_errors.is_empty() {
            let first = &response.row_errors[0];
            return Err(BigQueryError::Invalid(format!(
                "BigQuery refused {} row(s) of {}: row {}: {}",
                response.row_errors.len(),
                table.name,
                first.index,
                first.message
            )));
        }
        match response.response {
            Some(append_rows_response::Response::AppendResult(_)) => Ok(Appended::Written),
            Some(append_rows_response::Response::Error(error)) => match error.code {
                ALREADY_EXISTS => Ok(Appended::AlreadyExists),
                OUT_OF_RANGE => Ok(Appended::OutOfRange(error.message)),
                code => Err(BigQueryError::Grpc(tonic::Status::new(
                    tonic::Code::from_i32(code),
                    error.message,
                ))),
            },
            None => Err(BigQueryError::Invalid(
                "AppendRows answered neither a result nor an error".to_owned(),
            )),
        }
    }
}

/// The same outcomes when they come as the call's status.
fn classify_status(status: tonic::Status) -> Result<Appended, BigQueryError> {
    match status.code() {
        tonic::Code::AlreadyExists => Ok(Appended::AlreadyExists),
        tonic::Code::OutOfRange => Ok(Appended::OutOfRange(status.message().to_owned())),
        _ => Err(status.into()),
    }
}
