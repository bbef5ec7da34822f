//! [`FsOptions`]: the settings of a checkpoint storage, built and checked by
//! [`FsOptionsBuilder`]; [`S3Config`]: the typed settings of an S3 store.

use std::collections::BTreeMap;

use state_api::{Result, StateError};

use crate::lease::LeaseOptions;

/// The default inline threshold: streams below 20 KiB go into the metadata.
pub const DEFAULT_INLINE_THRESHOLD: usize = 20 * 1024;
/// The largest inline threshold allowed.
pub const MAX_INLINE_THRESHOLD: usize = 1024 * 1024;

/// Settings of a [`FsCheckpointStorage`](crate::FsCheckpointStorage), valid by
/// construction: [`FsOptions::default`] or [`FsOptions::builder`] (which checks every
/// value when it builds).
///
/// ```
/// use state_fs::{FsOptions, S3Config};
///
/// let options = FsOptions::builder()
///     .retained_checkpoints(3)
///     .s3(S3Config::new().endpoint("http://127.0.0.1:9000").region("eu-west-1").credentials("key", "secret"))
///     .build()?;
/// assert_eq!(options.retained_checkpoints(), 3);
/// assert!(FsOptions::builder().retained_checkpoints(0).build().is_err());
/// # Ok::<(), state_api::StateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsOptions {
    inline_threshold: usize,
    retained_checkpoints: usize,
    transfer_concurrency: usize,
    store_options: BTreeMap<String, String>,
    verify_before_restore: bool,
    lease: Option<LeaseOptions>,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            retained_checkpoints: 1,
            transfer_concurrency: 4,
            store_options: BTreeMap::new(),
            verify_before_restore: true,
            lease: Some(LeaseOptions::default()),
        }
    }
}

impl FsOptions {
    /// A builder starting from the defaults.
    pub fn builder() -> FsOptionsBuilder {
        FsOptionsBuilder {
            options: FsOptions::default(),
        }
    }

    /// A builder starting from these options.
    pub fn to_builder(&self) -> FsOptionsBuilder {
        FsOptionsBuilder { options: self.clone() }
    }

    /// Streams smaller than this are inlined into the metadata (default 20 KiB).
    pub fn inline_threshold(&self) -> usize {
        self.inline_threshold
    }

    /// Completed checkpoints kept (default 1).
    pub fn retained_checkpoints(&self) -> usize {
        self.retained_checkpoints
    }

    /// Concurrent uploads and downloads (default 4).
    pub fn transfer_concurrency(&self) -> usize {
        self.transfer_concurrency
    }

    /// Options of the remote store (S3 endpoint, credentials, ...).
    pub fn store_options(&self) -> &BTreeMap<String, String> {
        &self.store_options
    }

    /// Whether recovery verifies every file's CRC32C before choosing a checkpoint.
    pub fn verify_before_restore(&self) -> bool {
        self.verify_before_restore
    }

    /// The lease that makes one running job the owner of its directory, if any.
    pub fn lease(&self) -> Option<&LeaseOptions> {
        self.lease.as_ref()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.inline_threshold > MAX_INLINE_THRESHOLD {
            return Err(StateError::InvalidArgument(format!(
                "inline threshold {} exceeds the maximum of {MAX_INLINE_THRESHOLD} bytes",
                self.inline_threshold
            )));
        }
        if self.retained_checkpoints == 0 {
            return Err(StateError::InvalidArgument(
                "at least one completed checkpoint must be retained".into(),
            ));
        }
        if let Some(lease) = &self.lease {
            lease.validate()?;
        }
        if self.transfer_concurrency == 0 {
            return Err(StateError::InvalidArgument(
                "transfer concurrency must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Builds [`FsOptions`]; [`build`](Self::build) checks every value.
#[derive(Debug, Clone)]
#[must_use]
pub struct FsOptionsBuilder {
    options: FsOptions,
}

impl FsOptionsBuilder {
    /// Streams smaller than `bytes` are inlined into the metadata (at most
    /// [`MAX_INLINE_THRESHOLD`]; 0 writes every stream to a file).
    pub fn inline_threshold(mut self, bytes: usize) -> Self {
        self.options.inline_threshold = bytes;
        self
    }

    /// Completed checkpoints to keep (at least 1).
    pub fn retained_checkpoints(mut self, n: usize) -> Self {
        self.options.retained_checkpoints = n;
        self
    }

    /// Concurrent uploads and downloads (at least 1).
    pub fn transfer_concurrency(mut self, n: usize) -> Self {
        self.options.transfer_concurrency = n;
        self
    }

    /// Replaces the remote store's options by `options` (the generic form of
    /// [`s3`](Self::s3); unknown keys are errors when the store opens).
    pub fn store_options(mut self, options: BTreeMap<String, String>) -> Self {
        self.options.store_options = options;
        self
    }

    /// Sets one option of the remote store.
    pub fn store_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.store_options.insert(key.into(), value.into());
        self
    }

    /// Sets the S3 store's options from a typed config (adds to [`store_options`](Self::store_options)).
    pub fn s3(mut self, config: S3Config) -> Self {
        self.options.store_options.extend(config.into_options());
        self
    }

    /// Whether recovery reads every file of a checkpoint to verify its CRC32C before
    /// choosing it (default true); without it only presence and sizes are checked and
    /// damage is found during the restore.
    pub fn verify_before_restore(mut self, verify: bool) -> Self {
        self.options.verify_before_restore = verify;
        self
    }

    /// Owns the job directory with a lease of these settings (the default is a lease
    /// with a 30 s time to live).
    pub fn lease(mut self, lease: LeaseOptions) -> Self {
        self.options.lease = Some(lease);
        self
    }

    /// No lease: for a directory that only one process can ever reach.
    pub fn without_lease(mut self) -> Self {
        self.options.lease = None;
        self
    }

    /// The options, or [`StateError::InvalidArgument`] naming the value out of range.
    pub fn build(self) -> Result<FsOptions> {
        self.options.validate()?;
        Ok(self.options)
    }
}

/// How an S3 store signs its requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum S3Credentials {
    /// Unsigned requests (a public bucket, a local test server).
    #[default]
    Anonymous,
    /// Static keys.
    Static {
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: String,
        /// A session token, for temporary credentials.
        session_token: Option<String>,
    },
}

/// The typed settings of an S3 (or S3-compatible) store, turned into the store options
/// that [`Location::open`](crate::Location::open) reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct S3Config {
    /// The endpoint (`https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`);
    /// AWS's default when `None`.
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    pub region: Option<String>,
    /// How requests are signed.
    pub credentials: S3Credentials,
    /// Virtual-host-style addressing (`bucket.host`) instead of path style (`host/bucket`).
    pub virtual_host_style: bool,
}

impl S3Config {
    /// Anonymous, path style, AWS's default endpoint and `us-east-1`.
    pub fn new() -> Self {
        S3Config::default()
    }

    /// With this endpoint.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// In this region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Signed with these static keys.
    pub fn credentials(mut self, access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        self.credentials = S3Credentials::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        };
        self
    }

    /// With virtual-host-style addressing.
    pub fn virtual_host_style(mut self) -> Self {
        self.virtual_host_style = true;
        self
    }

    /// The generic store options this config stands for.
    pub fn into_options(self) -> BTreeMap<String, String> {
        let mut o = BTreeMap::new();
        if let Some(e) = self.endpoint {
            o.insert("endpoint".into(), e);
        }
        if let Some(r) = self.region {
            o.insert("region".into(), r);
        }
        match self.credentials {
            S3Credentials::Anonymous => {
                o.insert("anonymous".into(), "true".into());
            }
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                o.insert("access_key_id".into(), access_key_id);
                o.insert("secret_access_key".into(), secret_access_key);
                if let Some(t) = session_token {
                    o.insert("session_token".into(), t);
                }
            }
        }
        if self.virtual_host_style {
            o.insert("virtual_host_style".into(), "true".into());
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_builder_checks_every_value() {
        assert!(FsOptions::builder().build().is_ok());
        for bad in [
            FsOptions::builder().inline_threshold(MAX_INLINE_THRESHOLD + 1),
            FsOptions::builder().retained_checkpoints(0),
            FsOptions::builder().transfer_concurrency(0),
            FsOptions::builder().lease(LeaseOptions {
                ttl: Duration::from_secs(1),
                heartbeat: Duration::from_secs(2),
            }),
        ] {
            assert!(matches!(bad.build(), Err(StateError::InvalidArgument(_))));
        }
        let o = FsOptions::builder()
            .retained_checkpoints(2)
            .without_lease()
            .build()
            .unwrap();
        assert_eq!((o.retained_checkpoints(), o.lease()), (2, None));
        assert_eq!(o.to_builder().build().unwrap(), o);
    }

    #[test]
    fn an_s3_config_becomes_the_options_the_store_reads() {
        let o = S3Config::new()
            .endpoint("http://127.0.0.1:9000")
            .region("eu-west-1")
            .credentials("id", "secret")
            .virtual_host_style()
            .into_options();
        let expected: BTreeMap<String, String> = [
            ("endpoint", "http://127.0.0.1:9000"),
            ("region", "eu-west-1"),
            ("access_key_id", "id"),
            ("secret_access_key", "secret"),
            ("virtual_host_style", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(o, expected);
        assert_eq!(
            S3Config::new().into_options().get("anonymous").map(String::as_str),
            Some("true")
        );
    }
}
