//! Checkpoint locations as URIs: `file:///data/checkpoints` (or a plain path),
//! `s3://bucket/prefix` (feature `s3`), `hdfs://namenode:port/path` (feature `hdfs`).

use std::collections::BTreeMap;

use state_api::{Result, StateError};

use crate::store::OpendalStore;

/// A parsed checkpoint location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local {
        /// Absolute or relative directory.
        root: String,
    },
    /// An S3 (or S3-compatible) bucket and key prefix.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (the root inside the bucket).
        prefix: String,
    },
    /// An HDFS cluster and directory.
    Hdfs {
        /// `hdfs://host:port`.
        name_node: String,
        /// The directory.
        root: String,
    },
}

fn bad(uri: &str, why: &str) -> StateError {
    StateError::InvalidArgument(format!("checkpoint location `{uri}`: {why}"))
}

impl Location {
    /// Parses a location URI. A string without a scheme is a local path.
    pub fn parse(uri: &str) -> Result<Self> {
        if uri.chars().any(char::is_control) {
            return Err(bad(uri, "contains control characters"));
        }
        let Some((scheme, rest)) = uri.split_once("://") else {
            if uri.is_empty() {
                return Err(bad(uri, "is empty"));
            }
            return Ok(Location::Local { root: uri.to_string() });
        };
        match scheme {
            "file" => {
                if rest.is_empty() {
                    return Err(bad(uri, "has no path"));
                }
                Ok(Location::Local { root: rest.to_string() })
            }
            "s3" | "s3a" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad(uri, "has no bucket"));
                }
                Ok(Location::S3 {
                    bucket: bucket.to_string(),
                    prefix: format!("/{}", prefix.trim_matches('/')),
                })
            }
            "hdfs" => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                if host.is_empty() {
                    return Err(bad(uri, "has no name node"));
                }
                Ok(Location::Hdfs {
                    name_node: format!("hdfs://{host}"),
                    root: format!("/{}", path.trim_matches('/')),
                })
            }
            other => Err(bad(
                uri,
                &format!("unknown scheme `{other}` (use file://, s3:// or hdfs://)"),
            )),
        }
    }

    /// Opens the location. `options` configure remote stores: for S3 `endpoint`,
    /// `region`, `access_key_id`, `secret_access_key`, `session_token`,
    /// `virtual_host_style` (`true`), `anonymous` (`true`); unknown options are errors.
    pub fn open(&self, options: &BTreeMap<String, String>) -> Result<OpendalStore> {
        let op_err = |e: opendal::Error| {
            let retryable = e.is_temporary();
            StateError::storage(format!("opening {self:?}"), e, retryable)
        };
        match self {
            Location::Local { root } => {
                if let Some(k) = options.keys().next() {
                    return Err(StateError::InvalidArgument(format!(
                        "option `{k}` does not apply to a local directory"
                    )));
                }
                std::fs::create_dir_all(root).map_err(|e| StateError::from_io(format!("creating `{root}`"), e))?;
                let op = opendal::Operator::new(opendal::services::Fs::default().root(root)).map_err(op_err)?;
                OpendalStore::new(op, format!("file://{root}"))
            }
            #[cfg(feature = "s3")]
            Location::S3 { bucket, prefix } => {
                // Installs opendal's default (reqwest, rustls) HTTP transport once per process.
                opendal::install_default();
                let mut b = opendal::services::S3::default()
                    .bucket(bucket)
                    .root(prefix)
                    .disable_config_load();
                for (k, v) in options {
                    b = match k.as_str() {
                        "endpoint" => b.endpoint(v),
                        "region" => b.region(v),
                        "access_key_id" => b.access_key_id(v),
                        "secret_access_key" => b.secret_access_key(v),
                        "session_token" => b.session_token(v),
                        "virtual_host_style" if v == "true" => b.enable_virtual_host_style(),
                        "anonymous" if v == "true" => b.skip_signature(),
                        _ => return Err(StateError::InvalidArgument(format!("unknown S3 option `{k}={v}`"))),
                    };
                }
                if !options.contains_key("region") {
                    b = b.region("us-east-1");
                }
                // Object stores have transient errors: retry them with backoff.
                let op = opendal::Operator::new(b)
                    .map_err(op_err)?
                    .layer(opendal::layers::RetryLayer::new().with_jitter());
                OpendalStore::new(op, format!("s3://{bucket}{prefix}"))
            }
            #[cfg(feature = "hdfs")]
            Location::Hdfs { name_node, root } => {
                if let Some(k) = options.keys().next() {
                    return Err(StateError::InvalidArgument(format!("unknown HDFS option `{k}`")));
                }
                let b = opendal::services::HdfsNative::default().name_node(name_node).root(root);
                let op = opendal::Operator::new(b)
                    .map_err(op_err)?
                    .layer(opendal::layers::RetryLayer::new().with_jitter());
                OpendalStore::new(op, format!("{name_node}{root}"))
            }
            #[allow(unreachable_patterns)]
            other => Err(StateError::InvalidArgument(format!(
                "{other:?} needs this crate's `{}` feature",
                if matches!(other, Location::S3 { .. }) {
                    "s3"
                } else {
                    "hdfs"
                }
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes_and_plain_paths() {
        assert_eq!(
            Location::parse("file:///data/cp").unwrap(),
            Location::Local {
                root: "/data/cp".into()
            }
        );
        assert_eq!(
            Location::parse("./checkpoints").unwrap(),
            Location::Local {
                root: "./checkpoints".into()
            }
        );
        assert_eq!(
            Location::parse("s3://bucket/a/b/").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "/a/b".into()
            }
        );
        assert_eq!(
            Location::parse("s3://bucket").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "/".into()
            }
        );
        assert_eq!(
            Location::parse("hdfs://nn:8020/flink/cp").unwrap(),
            Location::Hdfs {
                name_node: "hdfs://nn:8020".into(),
                root: "/flink/cp".into()
            }
        );
    }

    #[test]
    fn rejects_bad_locations() {
        for uri in [
            "",
            "s3://",
            "s3:///x",
            "hdfs:///x",
            "ftp://x/y",
            "file://",
            "file:///a\nb",
        ] {
            assert!(
                matches!(Location::parse(uri), Err(StateError::InvalidArgument(_))),
                "{uri:?}"
            );
        }
    }
}
