//! BigQuery as the export service uses it: the REST control plane for the
//! dataset, tables and views ([`rest`]), and the Storage Write API's
//! committed streams with explicit offsets for the rows ([`write`], a tonic
//! client generated from `proto/bigquery_write.proto`; [`rows`] encodes rows
//! by field number); [`jobs`] runs the load jobs that rebuild a day's
//! partition (`tally export backfill`). Google's shapes never leave this module.
//!
//! Credentials: anonymous against an emulator (`export.rest_endpoint` /
//! `export.grpc_endpoint` set), otherwise Application Default Credentials
//! (Workload Identity in a cluster) through `google-cloud-auth`.

pub mod jobs;
pub mod rest;
pub mod rows;
pub mod write;

/// The generated Storage Write client and messages.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod wire {
    tonic::include_proto!("google.cloud.bigquery.storage.v1");
}

use google_cloud_auth::credentials::{CacheableResource, Credentials};
use http::HeaderMap;
use tally_runtime::config::ExportConfig;

/// BigQuery's REST endpoint when none is configured.
pub const DEFAULT_REST_ENDPOINT: &str = "https://bigquery.googleapis.com";
/// The Storage API's endpoint when none is configured.
pub const DEFAULT_GRPC_ENDPOINT: &str = "https://bigquerystorage.googleapis.com";

/// What talking to BigQuery can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BigQueryError {
    /// No credentials, or they could not be refreshed.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The HTTP request did not complete.
    #[error("BigQuery REST: {0}")]
    Http(#[from] reqwest::Error),
    /// BigQuery answered an error.
    #[error("BigQuery REST {status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// BigQuery's error message.
        message: String,
    },
    /// The Storage API answered an error.
    #[error("BigQuery Storage: {0}")]
    Grpc(#[from] tonic::Status),
    /// The Storage API's endpoint could not be reached.
    #[error("BigQuery Storage connection: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// A bug: a row or a request this service built is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Where the dataset is and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The Google Cloud project.
    pub project: String,
    /// The dataset, in the project.
    pub dataset: String,
    /// BigQuery's location for the dataset when it is created (`US`, `EU`, …).
    pub location: String,
    /// The REST endpoint, without `/bigquery/v2`.
    pub rest_endpoint: String,
    /// The Storage API endpoint.
    pub grpc_endpoint: String,
    /// Anonymous (an emulator) or Application Default Credentials.
    pub anonymous: bool,
}

impl Target {
    /// The target the `[export]` section names; `None` when export is off.
    pub fn from_config(config: &ExportConfig) -> Option<Self> {
        let project = config.project_id.clone().filter(|id| !id.is_empty())?;
        let anonymous = config.rest_endpoint.is_some() || config.grpc_endpoint.is_some();
        Some(Self {
            project,
            dataset: config.dataset.clone(),
            location: config.location.clone(),
            rest_endpoint: config
                .rest_endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_REST_ENDPOINT.to_owned()),
            grpc_endpoint: config
                .grpc_endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_GRPC_ENDPOINT.to_owned()),
            anonymous,
        })
    }

    /// `projects/{p}/datasets/{d}/tables/{table}`.
    pub fn table_path(&self, table: &str) -> String {
        format!(
            "projects/{}/datasets/{}/tables/{table}",
            self.project, self.dataset
        )
    }
}

/// Credentials that add their headers to a request.
#[derive(Debug, Clone)]
pub struct Auth {
    credentials: Credentials,
}

impl Auth {
    /// Anonymous credentials for an emulator, Application Default Credentials otherwise.
    pub fn new(anonymous: bool) -> Result<Self, BigQueryError> {
        let credentials = if anonymous {
            google_cloud_auth::credentials::anonymous::Builder::new().build()
        } else {
            google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|error| BigQueryError::Credentials(error.to_string()))?
        };
        Ok(Self { credentials })
    }

    /// The headers to send (the access token; none when anonymous).
    pub async fn headers(&self) -> Result<HeaderMap, BigQueryError> {
        match self
            .credentials
            .headers(http::Extensions::new())
            .await
            .map_err(|error| BigQueryError::Credentials(error.to_string()))?
        {
            CacheableResource::New { data, .. } => Ok(data),
            CacheableResource::NotModified => Ok(HeaderMap::new()),
        }
    }
}
