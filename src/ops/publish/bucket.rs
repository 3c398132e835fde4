//! The bucket side of a publish: the S3 client, and how objects are put,
//! compared and named.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::plan::File;
use super::{Credentials, Location, PublishError, content_type};

/// The bucket, and how to name things in messages.
pub(super) struct Bucket {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) location: Location,
    pub(super) credentials: String,
    pub(super) part_size: usize,
}

impl Bucket {
    pub(super) fn open(
        location: &Location,
        credentials: Option<Credentials>,
        part_size: usize,
    ) -> Result<Bucket, PublishError> {
        // The bucket's address is the one Nix computes from the URL
        // (`Location::bucket_url`), handed over whole: to `object_store`, an
        // endpoint with virtual-hosted requests is the bucket's own address,
        // used as it is. The environment's `AWS_ENDPOINT_URL_S3`, which
        // would take precedence over it, and `AWS_S3_EXPRESS` are overridden:
        // Nix reads neither, and the URL must mean one bucket to both.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&location.bucket)
            .with_region(&location.region)
            .with_endpoint(&location.bucket_url)
            .with_config(AmazonS3ConfigKey::S3Endpoint, &location.bucket_url)
            .with_virtual_hosted_style_request(true)
            .with_s3_express(false)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: 10,
                retry_timeout: Duration::from_secs(180),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300))
                    .with_allow_http(location.bucket_url.starts_with("http://")),
            );
        let credentials = match &credentials {
            Some(c) => {
                builder = builder
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key);
                if let Some(token) = &c.session_token {
                    builder = builder.with_token(token);
                }
                format!("credentials from {}", c.source)
            }
            None => "credentials from the instance, container or web identity".to_string(),
        };
        let store = builder.build().map_err(|source| PublishError::Store {
            what: "opening",
            url: location.to_string(),
            key: String::new(),
            credentials: credentials.clone(),
            source: Box::new(source),
        })?;
        Ok(Bucket {
            store: Arc::new(store),
            location: location.clone(),
            credentials,
            // S3's smallest part, but for the last.
            part_size: part_size.max(5 << 20),
        })
    }

    pub(super) fn key(&self, name: &str) -> Key {
        Key::from(self.location.key(name))
    }

    pub(super) fn error(
        &self,
        what: &'static str,
        name: &str,
        source: object_store::Error,
    ) -> PublishError {
        PublishError::Store {
            what,
            url: self.location.to_string(),
            key: if name.is_empty() {
                String::new()
            } else {
                format!("/{name}")
            },
            credentials: self.credentials.clone(),
            source: Box::new(source),
        }
    }

    /// Every object under the prefix: name (relative to it) -> (size, ETag).
    pub(super) async fn list(
        &self,
    ) -> Result<HashMap<String, (u64, Option<String>)>, PublishError> {
        let prefix = (!self.location.prefix.is_empty()).then(|| Key::from(&*self.location.prefix));
        let strip = if self.location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.location.prefix)
        };
        let metas: Vec<_> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.error("listing", "", e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some((name, (m.size, m.e_tag)))
            })
            .collect())
    }

    pub(super) async fn get(&self, name: &str) -> Result<Vec<u8>, PublishError> {
        let result = self
            .store
            .get(&self.key(name))
            .await
            .map_err(|e| self.error("reading", name, e))?;
        let bytes = result
            .bytes()
            .await
            .map_err(|e| self.error("reading", name, e))?;
        Ok(bytes.to_vec())
    }

    /// The headers of an upload of `name` (a single one, or the start of a
    /// multipart one, whose parts inherit them): its content type, and the
    /// URL's storage class.
    fn attributes(&self, name: &str) -> Attributes {
        let mut attributes = Attributes::from_iter([(Attribute::ContentType, content_type(name))]);
        if let Some(class) = &self.location.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        attributes
    }

    pub(super) async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), PublishError> {
        let options = PutOptions {
            attributes: self.attributes(name),
            ..Default::default()
        };
        self.store
            .put_opts(&self.key(name), PutPayload::from(bytes), options)
            .await
            .map_err(|e| self.error("uploading to", name, e))?;
        Ok(())
    }

    /// Uploads a file, in parts if it is larger than one.
    pub(super) async fn put_file(&self, file: &File) -> Result<(), PublishError> {
        let io = |source| PublishError::Io {
            path: file.path.clone(),
            source,
        };
        if file.size <= self.part_size as u64 {
            let bytes = tokio::fs::read(&file.path).await.map_err(io)?;
            return self.put_bytes(&file.name, bytes).await;
        }
        let options = PutMultipartOptions {
            attributes: self.attributes(&file.name),
            ..Default::default()
        };
        let upload = self
            .store
            .put_multipart_opts(&self.key(&file.name), options)
            .await
            .map_err(|e| self.error("starting the upload of", &file.name, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut source = tokio::fs::File::open(&file.path).await.map_err(io)?;
        let mut buffer = vec![0; 1 << 20];
        let sent = async {
            loop {
                // At most two parts of this file in flight: memory stays
                // within a few parts per file, however large the NAR.
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| self.error("uploading a part of", &file.name, e))?;
                let n = source.read(&mut buffer).await.map_err(io)?;
                if n == 0 {
                    return Ok(());
                }
                writer.write(&buffer[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| self.error("completing the upload of", &file.name, e))?;
                Ok(())
            }
            Err(e) => {
                // An incomplete upload is invisible to readers; aborting it
                // frees its parts (a bucket lifecycle rule does it too).
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

/// The MD5 of `bytes` in hex: the ETag S3 gives a single-part upload.
pub(super) fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether an object with ETag `etag` holds `bytes`: Some(answer) when the
/// ETag is an MD5, None when only reading it back can tell.
pub(super) fn same_by_etag(etag: Option<&str>, bytes: &[u8]) -> Option<bool> {
    let etag = etag?.trim_matches('"');
    (etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| etag.eq_ignore_ascii_case(&md5_hex(bytes)))
}
