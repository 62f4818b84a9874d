//! Load jobs over BigQuery's REST API (`jobs.insert` through the upload URI,
//! `jobs.get`): a day's partition replaced by newline-delimited JSON rows,
//! under a job id the caller makes deterministic. BigQuery keeps a job id
//! for good, so inserting one again is refused with 409 `ALREADY_EXISTS`:
//! that answer means "this exact load was asked for before", and the job's
//! state says whether it is done.

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::BigQueryError;
use super::rest::Rest;
use crate::tables::Table;

/// How `jobs.insert` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// The job was created now.
    Created,
    /// A job with this id exists already (409 `ALREADY_EXISTS`).
    AlreadyExists,
}

/// A job's state, from `jobs.get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// `PENDING` or `RUNNING`.
    Running,
    /// `DONE` without `errorResult`: the partition holds the rows.
    Succeeded,
    /// `DONE` with `errorResult`: nothing was written (a job is atomic).
    Failed(String),
}

const BOUNDARY: &str = "tally_load_job_boundary";

impl Rest {
    /// Inserts a load job `job_id` replacing partition `day` of `table` by
    /// `ndjson` (newline-delimited JSON rows, one per line).
    pub async fn insert_load_job(
        &self,
        table: &Table,
        day: NaiveDate,
        job_id: &str,
        ndjson: &[u8],
    ) -> Result<Submitted, BigQueryError> {
        let job = json!({
            "jobReference": {
                "projectId": self.target.project,
                "jobId": job_id,
                "location": self.target.location,
            },
            "configuration": {
                "load": {
                    "destinationTable": {
                        "projectId": self.target.project,
                        "datasetId": self.target.dataset,
                        // The partition decorator: only that day is replaced.
                        "tableId": format!("{}${}", table.name, day.format("%Y%m%d")),
                    },
                    "sourceFormat": "NEWLINE_DELIMITED_JSON",
                    "writeDisposition": "WRITE_TRUNCATE",
                    "createDisposition": "CREATE_NEVER",
                },
            },
        });
        let mut body = Vec::with_capacity(ndjson.len() + 1024);
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{job}\r\n\
                 --{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(ndjson);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let url = format!(
            "{}/upload/bigquery/v2/projects/{}/jobs?uploadType=multipart",
            self.target.rest_endpoint.trim_end_matches('/'),
            self.target.project
        );
        let response = self
            .http
            .post(url)
            .headers(self.auth.headers().await?)
            .header(
                http::header::CONTENT_TYPE,
                format!("multipart/related; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let value: Value = serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(Submitted::Created),
            409 if value["error"]["status"] == json!("ALREADY_EXISTS") => {
                Ok(Submitted::AlreadyExists)
            }
            status => Err(Self::api_error(status, &value)),
        }
    }

    /// The state of job `job_id`.
    pub async fn job_state(&self, job_id: &str) -> Result<JobState, BigQueryError> {
        let path = format!("/jobs/{job_id}?location={}", self.target.location);
        let (status, job) = self.call(reqwest::Method::GET, &path, None).await?;
        if !(200..=299).contains(&status) {
            return Err(Self::api_error(status, &job));
        }
        let state = &job["status"];
        match state["state"].as_str() {
            Some("DONE") => match state.get("errorResult") {
                Some(error) if !error.is_null() => Ok(JobState::Failed(format!(
                    "{}: {}",
                    error["reason"].as_str().unwrap_or("error"),
                    error["message"].as_str().unwrap_or("no message")
                ))),
                _ => Ok(JobState::Succeeded),
            },
            Some(_) => Ok(JobState::Running),
            None => Err(BigQueryError::Invalid(format!(
                "jobs.get {job_id}: no status.state in {job}"
            ))),
        }
    }
}
