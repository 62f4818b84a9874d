//! BigQuery's REST control plane: the dataset, the declared tables (created,
//! or widened by the columns added since: additive only) and the
//! current-state views, all at start; and `jobs.query` for status checks and
//! tests.

use serde_json::{Value, json};

use super::{Auth, BigQueryError, Target};
use crate::tables::{Table, View};

/// The REST client of one dataset.
#[derive(Debug, Clone)]
pub struct Rest {
    pub(super) target: Target,
    pub(super) auth: Auth,
    pub(super) http: reqwest::Client,
}

/// What a table needed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableChange {
    /// Nothing: it has every declared column.
    None,
    /// It was created.
    Created,
    /// These columns were added.
    Widened(Vec<String>),
}

impl Rest {
    /// A client of `target`'s dataset.
    pub fn new(target: Target, auth: Auth) -> Result<Self, BigQueryError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Self { target, auth, http })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!(
            "{}/bigquery/v2/projects/{}{path}",
            self.target.rest_endpoint.trim_end_matches('/'),
            self.target.project
        )
    }

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), BigQueryError> {
        let mut request = self
            .http
            .request(method, self.url(path))
            .headers(self.auth.headers().await?);
        if let Some(body) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).map_err(|e| BigQueryError::Invalid(e.to_string()))?);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    pub(super) fn api_error(status: u16, body: &Value) -> BigQueryError {
        BigQueryError::Api {
            status,
            message: body["error"]["message"]
                .as_str()
                .unwrap_or("no error message")
                .to_owned(),
        }
    }

    /// Creates the dataset unless it exists.
    pub async fn ensure_dataset(&self) -> Result<bool, BigQueryError> {
        let body = json!({
            "datasetReference": {"projectId": self.target.project, "datasetId": self.target.dataset},
            "location": self.target.location,
            "description": "Tally's billing facts, exported exactly once (docs/warehouse.md).",
        });
        match self
            .call(reqwest::Method::POST, "/datasets", Some(&body))
            .await?
        {
            (200..=299, _) => Ok(true),
            (409, _) => Ok(false),
            (status, body) => Err(Self::api_error(status, &body)),
        }
    }

    /// Creates `table`, or adds the declared columns it lacks (NULLABLE, at the end).
    pub async fn ensure_table(&self, table: &Table) -> Result<TableChange, BigQueryError> {
        let path = format!("/datasets/{}/tables/{}", self.target.dataset, table.name);
        let (status, existing) = self.call(reqwest::Method::GET, &path, None).await?;
        match status {
            404 => {
                let body = table_resource(&self.target, table);
                match self
                    .call(
                        reqwest::Method::POST,
                        &format!("/datasets/{}/tables", self.target.dataset),
                        Some(&body),
                    )
                    .await?
                {
                    (200..=299, _) => Ok(TableChange::Created),
                    // Created by another replica meanwhile: look again.
                    (409, _) => Box::pin(self.ensure_table(table)).await,
                    (status, body) => Err(Self::api_error(status, &body)),
                }
            }
            200..=299 => {
                let present: Vec<String> = existing["schema"]["fields"]
                    .as_array()
                    .map(|fields| {
                        fields
                            .iter()
                            .filter_map(|field| field["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let missing: Vec<String> = table
                    .columns
                    .iter()
                    .filter(|column| !present.iter().any(|name| name == column.name))
                    .map(|column| column.name.to_owned())
                    .collect();
                if missing.is_empty() {
                    return Ok(TableChange::None);
                }
                // The stored fields first, unchanged, then the new ones: BigQuery
                // accepts only such an additive PATCH.
                let mut fields = existing["schema"]["fields"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for column in table.columns {
                    if missing.iter().any(|name| name == column.name) {
                        let mut field = field_resource(column);
                        field["mode"] = json!("NULLABLE");
                        fields.push(field);
                    }
                }
                let body = json!({"schema": {"fields": fields}});
                match self
                    .call(reqwest::Method::PATCH, &path, Some(&body))
                    .await?
                {
                    (200..=299, _) => Ok(TableChange::Widened(missing)),
                    (status, body) => Err(Self::api_error(status, &body)),
                }
            }
            status => Err(Self::api_error(status, &existing)),
        }
    }

    /// Creates `view` unless it exists (its query never changes: a new one is a new view).
    pub async fn ensure_view(&self, view: &View) -> Result<bool, BigQueryError> {
        let dataset = format!("{}.{}", self.target.project, self.target.dataset);
        let body = json!({
            "tableReference": {
                "projectId": self.target.project,
                "datasetId": self.target.dataset,
                "tableId": view.name,
            },
            "view": {"query": view.query.replace("{dataset}", &dataset), "useLegacySql": false},
        });
        match self
            .call(
                reqwest::Method::POST,
                &format!("/datasets/{}/tables", self.target.dataset),
                Some(&body),
            )
            .await?
        {
            (200..=299, _) => Ok(true),
            (409, _) => Ok(false),
            (status, body) => Err(Self::api_error(status, &body)),
        }
    }

    /// Runs `sql` (standard SQL, `{dataset}` replaced by the dataset) and
    /// returns its rows as strings (NULL as `None`).
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, BigQueryError> {
        let dataset = format!("{}.{}", self.target.project, self.target.dataset);
        let body = json!({
            "query": sql.replace("{dataset}", &dataset),
            "useLegacySql": false,
            "timeoutMs": 60_000,
        });
        let (status, body) = self
            .call(reqwest::Method::POST, "/queries", Some(&body))
            .await?;
        if !(200..=299).contains(&status) {
            return Err(Self::api_error(status, &body));
        }
        if body["jobComplete"] != json!(true) {
            return Err(BigQueryError::Invalid(format!(
                "query did not complete within 60 s: {sql}"
            )));
        }
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        Ok(rows
            .iter()
            .map(|row| {
                row["f"]
                    .as_array()
                    .map(|cells| {
                        cells
                            .iter()
                            .map(|cell| match &cell["v"] {
                                Value::Null => None,
                                Value::String(text) => Some(text.clone()),
                                other => Some(other.to_string()),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect())
    }
}

fn field_resource(column: &crate::tables::Column) -> Value {
    json!({
        "name": column.name,
        "type": column.kind.bigquery_name(),
        "mode": if column.required { "REQUIRED" } else { "NULLABLE" },
        "description": column.description,
    })
}

fn table_resource(target: &Target, table: &Table) -> Value {
    json!({
        "tableReference": {
            "projectId": target.project,
            "datasetId": target.dataset,
            "tableId": table.name,
        },
        "description": table.description,
        "schema": {"fields": table.columns.iter().map(field_resource).collect::<Vec<_>>()},
        "timePartitioning": {"type": "DAY", "field": table.partition_by},
        "clustering": {"fields": table.cluster_by},
    })
}
