//! Calling another Tally service over gRPC (`[peers]` in the config).
//!
//! A [`Peer`] is a lazily connected channel plus an interceptor that sends the
//! process's API key (`TALLY_API_KEY`) and the current W3C trace context on
//! every call, so a span started in one service continues in the next:
//!
//! ```ignore
//! let peer = Peer::lazy("http://ingest:50051", api_key)?;
//! let mut ingest = IngestServiceClient::with_interceptor(peer.channel(), peer.interceptor());
//! ```

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use crate::telemetry::inject_into_metadata;

/// A connection to another service; cheap to clone.
#[derive(Clone)]
pub struct Peer {
    url: String,
    channel: Channel,
    authorization: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        formatter
            .debug_struct("Peer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Why a peer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The URL is not a valid endpoint.
    #[error("peer url `{url}` is invalid: {reason}")]
    InvalidUrl {
        /// The configured URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The API key cannot be sent as a header.
    #[error("the API key contains characters that cannot be sent in a header")]
    InvalidApiKey,
}

impl Peer {
    /// A channel to `url` that connects on first use (and reconnects after failures).
    pub fn lazy(url: &str, api_key: Option<&str>) -> Result<Self, PeerError> {
        Self::lazy_with_ca(url, api_key, None)
    }

    /// [`Peer::lazy`]; an `https://` url trusts the system's roots and
    /// `ca_file` (PEM) when given.
    pub fn lazy_with_ca(
        url: &str,
        api_key: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, PeerError> {
        let endpoint: Endpoint =
            crate::tls::endpoint(url, ca_file).map_err(|error| PeerError::InvalidUrl {
                url: url.to_owned(),
                reason: error.to_string(),
            })?;
        let authorization = api_key
            .map(|key| {
                MetadataValue::try_from(format!("Bearer {key}"))
                    .map_err(|_| PeerError::InvalidApiKey)
            })
            .transpose()?;
        Ok(Self {
            url: url.to_owned(),
            channel: endpoint.connect_lazy(),
            authorization,
        })
    }

    /// The channel, for a generated client's `with_interceptor`.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Adds the API key and the trace context to each call.
    pub fn interceptor(&self) -> PeerInterceptor {
        PeerInterceptor {
            authorization: self.authorization.clone(),
        }
    }
}

/// When `status` is `peer` refusing this process's API key (unauthenticated,
/// or a scope missing): a message saying it is configuration — the key in
/// `TALLY_API_KEY` — and what to set, never "retry". `None` for any other
/// status.
pub fn refused_key(peer: &str, call: &str, status: &tonic::Status) -> Option<String> {
    let what = match status.code() {
        tonic::Code::Unauthenticated => "refused this process's API key",
        tonic::Code::PermissionDenied => "refused a call this process's API key has no scope for",
        _ => return None,
    };
    Some(format!(
        "{peer} {what} ({call}: {:?}: {}). This is configuration, not a transient failure: \
         set TALLY_API_KEY of this service to an active key with the `read` and `write` scopes \
         (the Helm chart and docker-compose.yml create one; otherwise \
         `tally keys create --name tally-peers --scope read,write`)",
        status.code(),
        status.message()
    ))
}

/// The interceptor of a [`Peer`]'s calls.
#[derive(Clone)]
pub struct PeerInterceptor {
    authorization: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for PeerInterceptor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PeerInterceptor")
    }
}

impl Interceptor for PeerInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        inject_into_metadata(request)
    }
}
