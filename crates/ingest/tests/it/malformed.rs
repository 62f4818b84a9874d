//! Raw bytes over HTTP/2 gRPC: a request body that is not the method's message
//! answers INVALID_ARGUMENT (tonic's codec says INTERNAL; the runtime's server
//! maps it), on unary, server-streaming and bidirectional calls alike; and the
//! backfill calls need the scopes the contract names.

use std::collections::BTreeSet;
use std::sync::Arc;

use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use tally_proto::ingest::ingest_service_client::IngestServiceClient;
use tally_proto::ingest::{CloseBackfillRequest, IngestStreamRequest, ListBackfillsRequest};
use tally_runtime::auth::{ApiKey, ApiKeyRegistry, AuthLayer, Scope, generate_key, hash_key};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::support::*;

/// Sends and receives bytes as they are: what a broken or hostile client sends.
#[derive(Debug, Clone, Copy, Default)]
struct RawBytes;

impl Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buffer: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buffer.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buffer: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buffer.copy_to_bytes(buffer.remaining()).to_vec()))
    }
}

async fn raw_client(h: &Harness) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(format!("http://{}", h.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn unary(h: &Harness, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = raw_client(h).await;
    grpc.ready().await.unwrap();
    grpc.unary(
        Request::new(body),
        PathAndQuery::from_static(path),
        RawBytes,
    )
    .await
    .map(tonic::Response::into_inner)
}

fn assert_invalid_argument(result: Result<Vec<u8>, Status>, case: &str) {
    let status = result.expect_err(case);
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    assert!(
        status.message().starts_with("malformed request"),
        "{case}: {status:?}"
    );
}

const INGEST_BATCH: &str = "/tally.ingest.v1.IngestService/IngestBatch";

#[tokio::test]
async fn undecodable_requests_answer_invalid_argument_on_every_kind_of_call() {
    let mut h = harness().await;
    // IngestBatchRequest.events (field 1) holding a UsageEvent whose id
    // (field 1, a string) is the bytes ff fe: not UTF-8.
    let invalid_utf8 = vec![0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    let cases: [(&str, Vec<u8>); 4] = [
        ("invalid UTF-8 in a string", invalid_utf8.clone()),
        // Field 1 sent as a varint where a message is expected.
        ("wrong wire type", vec![0x08, 0x01]),
        ("garbage", vec![0xff, 0xff, 0xff, 0xff, 0xff]),
        // Field 1 announces 16 bytes, one follows.
        ("truncated", vec![0x0a, 0x10, 0x0a]),
    ];
    for (case, body) in cases {
        assert_invalid_argument(unary(&h, INGEST_BATCH, body).await, case);
    }
    let status = unary(&h, INGEST_BATCH, invalid_utf8).await.unwrap_err();
    assert!(
        status.message().contains("UsageEvent.id"),
        "the message names the field: {status:?}"
    );

    // A unary call whose body holds no message at all.
    let mut grpc = raw_client(&h).await;
    grpc.ready().await.unwrap();
    let empty = grpc
        .client_streaming(
            Request::new(tokio_stream::iter(Vec::<Vec<u8>>::new())),
            PathAndQuery::from_static(INGEST_BATCH),
            RawBytes,
        )
        .await
        .map(tonic::Response::into_inner);
    assert_invalid_argument(empty, "no message");

    // Another unary method, and the health service every server carries.
    assert_invalid_argument(
        unary(
            &h,
            "/tally.ingest.v1.IngestService/GetIngestStatus",
            vec![0x0a, 0x01, 0xc0],
        )
        .await,
        "GetIngestStatus",
    );
    assert_invalid_argument(
        unary(&h, "/grpc.health.v1.Health/Check", vec![0x0a, 0x01, 0xff]).await,
        "health",
    );

    // Server streaming: answered before the first message.
    let mut grpc = raw_client(&h).await;
    grpc.ready().await.unwrap();
    let read = grpc
        .server_streaming(
            Request::new(vec![0xff, 0xff, 0xff]),
            PathAndQuery::from_static("/tally.ingest.v1.IngestService/ReadEvents"),
            RawBytes,
        )
        .await;
    let status = read.map(|_| ()).expect_err("ReadEvents");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Bidirectional streaming: the batch before the bad bytes is answered,
    // then the stream ends with INVALID_ARGUMENT.
    let good = IngestStreamRequest {
        batch_sequence: 1,
        events: vec![event("cus_a", "before-garbage")],
    }
    .encode_to_vec();
    let mut grpc = raw_client(&h).await;
    grpc.ready().await.unwrap();
    let mut answers = grpc
        .streaming(
            Request::new(tokio_stream::iter(vec![good, vec![0x0a, 0x02, 0xff]])),
            PathAndQuery::from_static("/tally.ingest.v1.IngestService/IngestStream"),
            RawBytes,
        )
        .await
        .unwrap()
        .into_inner();
    let first = answers
        .message()
        .await
        .unwrap()
        .expect("the first batch's answer");
    let first = tally_proto::ingest::IngestStreamResponse::decode(first.as_slice()).unwrap();
    assert_eq!(first.batch_sequence, 1);
    let ending = answers.message().await.unwrap_err();
    assert_eq!(ending.code(), Code::InvalidArgument, "{ending:?}");

    // Nothing of the bad requests was stored; the server still serves.
    assert_eq!(
        h.count("SELECT count(*) FROM ingest.rejected_events").await,
        0
    );
    assert_eq!(h.count("SELECT count(*) FROM ingest.events").await, 1);
    let fine = h.send(vec![event("cus_a", "after-garbage")]).await;
    assert_eq!(
        outcomes(&fine.results),
        [tally_proto::ingest::EventOutcome::Accepted]
    );
}

fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// `CloseBackfill` needs `admin`, like `OpenBackfill` (a `write` key could close one).
#[tokio::test]
async fn closing_a_backfill_needs_the_admin_scope() {
    let h = harness().await;
    let registry = Arc::new(ApiKeyRegistry::default());
    let key_with = |scopes: &[Scope]| {
        let plaintext = generate_key();
        registry.insert(
            hash_key(&plaintext),
            ApiKey {
                id: format!("key_{}", scopes.len()),
                name: "test".into(),
                scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
            },
        );
        plaintext
    };
    let writer = key_with(&[Scope::Write]);
    let admin = key_with(&[Scope::Admin, Scope::Write]);
    let address = h
        .ingest
        .grpc_server(16 * 1024 * 1024)
        .spawn_on_loopback(AuthLayer::new(Arc::clone(&registry)), &h.shutdown)
        .await
        .unwrap();
    let mut client = IngestServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let close = CloseBackfillRequest {
        backfill_id: "bkf_unknown".into(),
    };
    let refused = client
        .close_backfill(with_key(&writer, close.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("admin"), "{refused:?}");
    // Past the scope check: the backfill does not exist.
    let allowed = client
        .close_backfill(with_key(&admin, close))
        .await
        .unwrap_err();
    assert_eq!(allowed.code(), Code::NotFound, "{allowed:?}");
    // Listing backfills stays a read.
    client
        .list_backfills(with_key(&writer, ListBackfillsRequest::default()))
        .await
        .unwrap();
}
