//! A request the server cannot decode is the caller's fault: INVALID_ARGUMENT,
//! never INTERNAL.
//!
//! tonic answers INTERNAL for a request body it cannot decode: tonic-prost's
//! codec turns every `prost::DecodeError` (invalid UTF-8 in a string, a wrong
//! wire type, garbage, a truncated message) into
//! `Status::internal("failed to decode Protobuf message: …")`; a gRPC frame cut
//! short is `Status::internal("Unexpected EOF decoding stream.")`; a unary call
//! without a message is `Status::internal("Missing request message.")`. That is
//! the letter of gRPC's status-code guide ("error parsing request proto"), but
//! INTERNAL tells a caller "our bug, maybe retry" and pages our operators,
//! while the bytes are the caller's to fix and no retry can help. So every
//! server answers these with INVALID_ARGUMENT, in one place:
//!
//! * [`DecodeErrorsLayer`] (in every server, see [`crate::server`]) rewrites the
//!   status of a unary or server-streaming call: tonic decodes its one request
//!   message before the handler runs and answers the failure at once;
//! * a handler that reads a request *stream* receives the decode error from
//!   `Streaming::message` in the middle of the call and answers it through
//!   [`caller_status`] (as ingest's `IngestStream` does).
//!
//! The failures are recognised by their messages, which only tonic and prost
//! write: handlers never answer INTERNAL with details (`runtime::error` logs
//! them and answers a bare "internal error"), and a peer's status is mapped to
//! the caller's own error, never passed through.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::{Code, Status};

/// How tonic and prost begin the message of a request they could not decode.
const DECODE_FAILURES: [&str; 3] = [
    // prost::DecodeError, through tonic-prost's codec
    "failed to decode Protobuf message",
    // a length-prefixed gRPC message cut short
    "Unexpected EOF decoding stream",
    // a unary call whose body holds no message
    "Missing request message",
];

/// Whether `status` is tonic's report of a request it could not decode.
pub fn is_malformed_request(status: &Status) -> bool {
    status.code() == Code::Internal
        && DECODE_FAILURES
            .iter()
            .any(|prefix| status.message().starts_with(prefix))
}

/// The status the caller gets for `status`: INVALID_ARGUMENT with prost's
/// description (which names the field, e.g. `IngestBatchRequest.events:
/// UsageEvent.id: invalid string value: data is not UTF-8 encoded`) when the
/// request could not be decoded; `status` itself otherwise.
pub fn caller_status(status: Status) -> Status {
    if is_malformed_request(&status) {
        Status::invalid_argument(format!("malformed request: {}", status.message()))
    } else {
        status
    }
}

/// The tower layer every server runs (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrorsLayer;

impl<S> tower::Layer<S> for DecodeErrorsLayer {
    type Service = DecodeErrorsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeErrorsService { inner }
    }
}

/// The service [`DecodeErrorsLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct DecodeErrorsService<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>>
    for DecodeErrorsService<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            rewrite_decode_failure(&mut response);
            Ok(response)
        })
    }
}

/// A call that failed before its handler ran answers with the status in the
/// response headers ("trailers-only"); rewrites it when it is a decode failure.
fn rewrite_decode_failure<B>(response: &mut http::Response<B>) {
    // Cheap check first: almost every response is a success whose status
    // comes later, in the trailers.
    let internal = response
        .headers()
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"13");
    if !internal {
        return;
    }
    let Some(status) = Status::from_header_map(response.headers()) else {
        return;
    };
    if !is_malformed_request(&status) {
        return;
    }
    let status = caller_status(status);
    match status.add_header(response.headers_mut()) {
        // tonic keeps the status of a trailers-only response beside the headers too.
        Ok(()) => {
            response.extensions_mut().insert(status);
        }
        Err(error) => tracing::warn!(%error, "cannot rewrite a decode failure's status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_failures_become_invalid_argument_and_nothing_else_changes() {
        for message in [
            "failed to decode Protobuf message: UsageEvent.id: invalid string value: data is not UTF-8 encoded",
            "failed to decode Protobuf message: buffer underflow",
            "Unexpected EOF decoding stream.",
            "Missing request message.",
        ] {
            let status = caller_status(Status::internal(message));
            assert_eq!(status.code(), Code::InvalidArgument, "{message}");
            assert!(status.message().ends_with(message));
        }
        for untouched in [
            Status::internal("internal error; see the server logs"),
            Status::invalid_argument("failed to decode Protobuf message: already right"),
            Status::unavailable("Missing request message."),
        ] {
            let code = untouched.code();
            assert_eq!(caller_status(untouched).code(), code);
        }
    }

    #[test]
    fn a_trailers_only_response_is_rewritten() {
        let mut response: http::Response<()> =
            Status::internal("failed to decode Protobuf message: invalid varint").into_http();
        rewrite_decode_failure(&mut response);
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            response.extensions().get::<Status>().map(Status::code),
            Some(Code::InvalidArgument)
        );

        let mut other: http::Response<()> =
            Status::internal("internal error; see the server logs").into_http();
        rewrite_decode_failure(&mut other);
        let status = Status::from_header_map(other.headers()).unwrap();
        assert_eq!(status.code(), Code::Internal);
    }
}
