//! Span file: JSON lines, one OTLP/JSON `ExportTraceServiceRequest` per exported batch (one
//! `ResourceSpans` per service), the format the OpenTelemetry Collector's file exporter writes
//! and its otlpjsonfile receiver reads. The file is opened for append and created 0600.
//! A line is written whole or not at all (one `write_all` on a blocking thread, never cancelled).

use std::io::Write;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::{Attributes, ResourceAttributesWithSchema};
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;

use super::ExportError;
use super::sdk::{group_by_service, resource_attributes, span_data};
use crate::trace::span::SpanRecord;

/// Appends batches to the span file.
pub(super) struct FileSink {
    path: PathBuf,
    /// `None` only while a write is in flight on the blocking pool (or after it panicked).
    file: Option<std::fs::File>,
    host_name: String,
    resource_attributes: Vec<(String, String)>,
}

impl FileSink {
    /// Opens (or creates, mode 0600) the span file for append.
    ///
    /// # Errors
    ///
    /// [`ExportError::File`] when the file cannot be opened.
    pub(super) fn open(
        path: &Path,
        host_name: String,
        resource_attributes: Vec<(String, String)>,
    ) -> Result<FileSink, ExportError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| ExportError::File {
                path: path.to_owned(),
                source,
            })?;
        Ok(FileSink {
            path: path.to_owned(),
            file: Some(file),
            host_name,
            resource_attributes,
        })
    }

    /// Writes `spans` as one line. Returns whether the line was written.
    pub(super) async fn export(&mut self, spans: &[SpanRecord]) -> bool {
        let Some(mut file) = self.file.take() else {
            return false;
        };
        let mut line = match serde_json::to_vec(&request(spans, &self.host_name, &self.resource_attributes)) {
            Ok(line) => line,
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "span file encode failed");
                self.file = Some(file);
                return false;
            }
        };
        line.push(b'\n');
        let written = tokio::task::spawn_blocking(move || {
            let res = file.write_all(&line);
            (file, res)
        })
        .await;
        match written {
            Ok((file, res)) => {
                self.file = Some(file);
                if let Err(error) = res {
                    tracing::warn!(path = %self.path.display(), %error, "span file write failed");
                    return false;
                }
                true
            }
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "span file writer panicked");
                false
            }
        }
    }
}

/// One batch as an OTLP request: a `ResourceSpans` per service, in order of first appearance.
pub(super) fn request(spans: &[SpanRecord], host_name: &str, extra: &[(String, String)]) -> ExportTraceServiceRequest {
    let resource_spans = group_by_service(spans)
        .into_iter()
        .flat_map(|(service, idx)| {
            let resource = ResourceAttributesWithSchema {
                attributes: Attributes::from(resource_attributes(&service, host_name, extra)),
                schema_url: None,
            };
            let data = idx.iter().map(|&i| span_data(&spans[i])).collect();
            group_spans_by_resource_and_scope(data, &resource)
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}
